"""portal.core.age stays a small, self-contained crypto library with a stable public surface."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import portal.core.age
from portal.core.age import scrypt

AGE_PACKAGE = Path(portal.core.age.__file__).parent
ROOT = AGE_PACKAGE.parents[2]

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
    "header_stanzas",
}
# Type aliases (a union of key classes) have no home module of their own.
ALIASES = {"PublicKey", "PrivateKey"}


def sources() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), p.name) for p in sorted(AGE_PACKAGE.glob("*.py"))}


def test_public_api_is_exactly_the_documented_names() -> None:
    assert set(portal.core.age.__all__) == PUBLIC_API
    for name in PUBLIC_API - ALIASES:
        value = getattr(portal.core.age, name)
        # Each name is a class or a function defined inside the package, not
        # a module or a re-exported outside object.
        assert inspect.isclass(value) or inspect.isfunction(value), name
        assert value.__module__.startswith("portal.core.age."), (name, value.__module__)
        assert value.__name__ == name
    for name in ALIASES:
        members = getattr(portal.core.age, name).__args__
        assert {member.__name__ for member in members} <= PUBLIC_API, name


def _outside_code() -> list[Path]:
    # The package's own tests (tests/test_age_*.py) test its internals, as
    # Go's in-package tests do; the portal and the other tests use the public
    # surface.
    paths = list((ROOT / "portal").rglob("*.py"))
    paths += [p for p in (ROOT / "tests").rglob("*.py") if not p.name.startswith("test_age_")]
    return [p for p in paths if AGE_PACKAGE not in p.parents]


def test_nothing_outside_the_package_imports_its_modules() -> None:
    checked = 0
    for path in _outside_code():
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "portal.core.age":
                checked += 1
                # `from portal.core.age import scrypt` would reach a module too.
                modules = {p.stem for p in AGE_PACKAGE.glob("*.py")}
                names = {alias.name for alias in node.names}
                assert not names & modules, f"{path} imports {names & modules}"
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("portal.core.age."), f"{path}: {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("portal.core.age."), f"{path}: {alias.name}"
    assert checked > 10


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


def test_scrypt_work_factor_is_named_once_in_the_package() -> None:
    # age -p writes log2(N) = 18; 2**18 x 1 KiB (r = 8) is 256 MiB per guess.
    assert scrypt.DEFAULT_WORK_FACTOR == 18
    assert scrypt.DEFAULT_WORK_FACTOR <= scrypt.DEFAULT_MAX_WORK_FACTOR
    assert scrypt.ScryptRecipient(b"passphrase").work_factor == scrypt.DEFAULT_WORK_FACTOR


def test_age_package_reads_no_environment() -> None:
    for name, tree in sources().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"environ", "getenv"}, f"{name} reads the environment"
            if isinstance(node, ast.Name):
                assert node.id != "print", f"{name} prints"
