"""`keygen`, `key backup` and `key restore`: making, splitting and rebuilding identities."""

from __future__ import annotations

import argparse
from pathlib import Path

from portal.core.age import (
    MLKEM768X25519Identity,
    PrivateKey,
    X25519Identity,
)
from portal.core.cliutil import UsageError
from portal.core.exitstatus import ExitStatus
from portal.core.replysig import ReplySigningKey
from portal.review import keys, shares
from portal.review.cli.context import (
    Context,
    UserError,
    read_passphrase_file,
    unlock_source,
)


def _new_passphrase(ctx: Context, args: argparse.Namespace) -> bytes | None:
    """The passphrase to protect a new identity file with, or None for --no-passphrase."""
    if args.no_passphrase:
        return None
    if args.passphrase_file:
        secret = read_passphrase_file(args.passphrase_file)
    else:
        if not ctx.interactive():
            raise UserError(
                "no terminal to ask for a passphrase on: give one with --passphrase-file FILE "
                "(or use --no-passphrase for a throwaway test key)"
            )
        secret = ctx.ask_secret("New passphrase for the identity: ")
        if ctx.ask_secret("Repeat the passphrase: ") != secret:
            raise UserError("the two passphrases differ; nothing was written. Run again")
    try:
        keys.check_passphrase(secret)
    except keys.KeyFileError as exc:
        raise UserError(str(exc)) from None
    return secret


def _write_identity(ctx: Context, args: argparse.Namespace, identity: PrivateKey, note: str) -> str:
    passphrase = _new_passphrase(ctx, args)
    text = keys.identity_file_text(identity, note=note)
    # Read at call time, so the test suite can lower the module constant.
    work_factor = keys.IDENTITY_WORK_FACTOR
    data = text if passphrase is None else keys.protect(text, passphrase, work_factor)
    keys.write_new_file(Path(args.out), data)
    return "unencrypted (no passphrase)" if passphrase is None else "encrypted with your passphrase"


_ROTATION_HELP = """\
Wrote {out} ({how}, {kind}).
The line printed above is its public key (recipient). To start using it:
  1. Put that {prefix} line in keys/recipients.txt on the server, on a line of
     its own. {placement}
  2. Open with both the old and the new identity while old submissions exist:
       testimony-review open SRC --identity OLD-KEY --identity {out} --out DIR
  3. Keep the old identity for the submissions encrypted to it.
  4. Make a paper backup now, before anything is encrypted to this key:
       testimony-review key backup --identity {out} --out BACKUP-DIR"""


_PQ_PLACEMENT = """\
A post-quantum key must not be listed beside
     classic age1... keys (the server refuses the mix): REPLACE every age1...
     line with the age1pq1... keys of all reviewers, then restart the server.
     See docs/REVIEWER.md, "Moving to a post-quantum key"."""


_CLASSIC_PLACEMENT = """\
List it BESIDE any recipient already there;
     remove the old line only when every reviewer can open with the new key.
     A classic key is not protected against a future quantum computer."""


_SIGNING_HELP = """\
Wrote {out} ({how}): the organisation's reply signing key.
The line printed above is its public half. To start using it:
  1. Put that line in keys/reply-signers.txt on the server (PORTAL_REPLY_SIGNERS),
     on a line of its own, and restart the server. Never copy {out} there.
  2. Sign every reply with it:
       testimony-review reply ID --from DIR --message-file MSG --out OUTBOX --signing-key {out}
  3. Back it up like the decryption key (a second encrypted copy kept offline);
     see docs/REVIEWER.md, "The reply signing key", for rotation."""


def cmd_keygen(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.signing:
        return _keygen_signing(ctx, args)
    identity: PrivateKey
    if args.classic:
        identity = X25519Identity.generate()
        kind, prefix, placement = "classic X25519", "age1...", _CLASSIC_PLACEMENT
    else:
        identity = MLKEM768X25519Identity.generate()
        kind, prefix, placement = "post-quantum mlkem768x25519", "age1pq1...", _PQ_PLACEMENT
    how = _write_identity(ctx, args, identity, "created")
    return ctx.done(
        identity.recipient,
        _ROTATION_HELP.format(out=args.out, how=how, kind=kind, prefix=prefix, placement=placement),
    )


def _keygen_signing(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.classic:
        raise UsageError(
            "testimony-review keygen: error: --classic is for decryption keys; a reply "
            "signing key (--signing) is always Ed25519"
        )
    key = ReplySigningKey.generate()
    passphrase = _new_passphrase(ctx, args)
    text = keys.signing_key_file_text(key)
    data = text if passphrase is None else keys.protect(text, passphrase, keys.IDENTITY_WORK_FACTOR)
    keys.write_new_file(Path(args.out), data)
    how = "unencrypted (no passphrase)" if passphrase is None else "encrypted with your passphrase"
    return ctx.done(key.public, _SIGNING_HELP.format(out=args.out, how=how))


def cmd_key_backup(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    found = keys.load_identities([Path(args.identity)], unlock_source(ctx, args.passphrase_file))
    if len(found) != 1:
        raise UserError(
            f"{args.identity} holds {len(found)} identities; back up a file with exactly one"
        )
    identity = found[0]
    mnemonics = shares.split_identity(identity, args.shares, args.threshold)
    out_dir = Path(args.out)
    paths = [out_dir / f"share-{i}-of-{args.shares}.txt" for i in range(1, args.shares + 1)]
    if existing := [str(p) for p in paths if p.exists() or p.is_symlink()]:
        # Sheets of two different backups in one folder would be mixed up.
        raise UserError(f"{', '.join(existing)} already exist; choose an empty folder for --out")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for index, mnemonic in enumerate(mnemonics, start=1):
        sheet = shares.render_sheet(
            mnemonic,
            index=index,
            shares=args.shares,
            threshold=args.threshold,
            recipient=identity.recipient,
        )
        path = paths[index - 1]
        keys.write_new_file(path, sheet.encode("utf-8"))
        written.append(path)
    return ctx.done(
        identity.recipient,
        f"Wrote {len(written)} share sheets to {out_dir}; any {args.threshold} of them restore "
        "the key.\nPrint each sheet, give one to each trustee, check the printouts, then "
        f"securely delete the files in {out_dir} (they are the key, in pieces).",
    )


def _typed_shares(ctx: Context) -> list[shares.ShareInput]:
    if not ctx.interactive():
        return shares.read_typed_shares(ctx.stdin, "standard input")
    collected: list[shares.ShareInput] = []
    needed: int | None = None
    while needed is None or len(collected) < needed:
        label = f"Share {len(collected) + 1}" + (f" of {needed}" if needed else "")
        ctx.err(f"{label}: type its words in order, then Enter (an empty line stops):")
        line = ctx.stdin.readline()
        if not line.strip():
            break
        item = shares.parse_sheet(line, f"typed share {len(collected) + 1}")
        try:
            needed = shares.check_share(item)
        except shares.ShareError as exc:
            ctx.err(f"  {exc}. Type that share again.")
            continue
        collected.append(item)
    return collected


def cmd_key_restore(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists; refusing to overwrite it")
    inputs: list[shares.ShareInput] = []
    for sheet in args.sheets:
        try:
            text = Path(sheet).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the share sheet {sheet}: {exc}") from exc
        inputs.append(shares.parse_sheet(text, sheet))
    if not inputs:
        inputs = _typed_shares(ctx)
    identity = shares.combine_shares(inputs)
    how = _write_identity(ctx, args, identity, "restored from backup shares")
    return ctx.done(
        identity.recipient,
        f"Restored the identity into {args.out} ({how}). Its public key, printed above, "
        "matches the one on the sheets.",
    )
