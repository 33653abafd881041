"""portal.core.age stays a small, self-contained crypto library with a stable public surface."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import portal.core.age

AGE_PACKAGE = Path(portal.core.age.__file__).parent

PUBLIC_API = {
    "AgeError",
    "HeaderError",
    "HMACError",
    "PayloadError",
    "ArmorError",
    "NoIdentityMatchError",
    "KeyFormatError",
    "X25519Identity",
    "X25519Recipient",
    "MLKEM768X25519Identity",
    "MLKEM768X25519Recipient",
    "PublicKey",
    "PrivateKey",
    "parse_recipient",
    "parse_identity",
    "check_mix",
    "is_post_quantum",
    "contains_secret_key",
    "ScryptRecipient",
    "ScryptIdentity",
    "Recipient",
    "Identity",
    "Stanza",
    "parse_recipients",
    "parse_identities",
    "looks_encrypted_identity",
    "Writer",
    "encrypt",
    "Reader",
    "decrypt",
    "decrypt_to_path",
}


def sources() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), p.name) for p in sorted(AGE_PACKAGE.glob("*.py"))}


def test_public_api_is_exactly_the_documented_names() -> None:
    assert set(portal.core.age.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(portal.core.age, name) is not None


def test_exceptions_form_the_documented_hierarchy() -> None:
    age = portal.core.age
    assert issubclass(age.HMACError, age.HeaderError)
    for error in (age.HeaderError, age.PayloadError, age.ArmorError, age.KeyFormatError):
        assert issubclass(error, age.AgeError)
    assert issubclass(age.NoIdentityMatchError, age.AgeError)


def test_age_package_imports_only_the_standard_library_and_cryptography() -> None:
    # _typeshed exists only for the type checker (imported under TYPE_CHECKING).
    allowed = set(sys.stdlib_module_names) | {"cryptography", "__future__", "_typeshed"}
    for name, tree in sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "portal":
                    assert module.startswith("portal.core.age"), f"{name} imports {module}"
                else:
                    assert top in allowed, f"{name} imports {module}"
                assert top != "logging", f"{name} imports logging"


def test_age_package_reads_no_environment() -> None:
    for name, tree in sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"environ", "getenv"}, f"{name} reads the environment"
            if isinstance(node, ast.Name):
                assert node.id != "print", f"{name} prints"
