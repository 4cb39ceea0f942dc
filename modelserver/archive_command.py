"""``streamml archive export|import``: a stopped server's models and history as one file.

    streamml archive export --data-dir D --out F.tar [--key-file K]
    streamml archive import --data-dir D F.tar (--key-file K | --trusted) [--force]

See :mod:`streamml.modelserver.archive` for what an archive holds and what import checks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamml.errors import ConfigurationError

MIN_KEY_BYTES = 16


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    out = sub.add_parser("export", help="write a stopped server's data dir to an archive")
    out.add_argument("--data-dir", type=Path, required=True, help="the server's data dir")
    out.add_argument("--out", type=Path, required=True, help="the archive to write (a tar)")
    out.add_argument("--key-file", type=Path, help="sign the archive with this key (16+ bytes)")
    into = sub.add_parser("import", help="make a data dir hold an archive (all or nothing)")
    into.add_argument("archive", type=Path, help="an archive written by 'archive export'")
    into.add_argument("--data-dir", type=Path, required=True, help="the (new) server's data dir")
    into.add_argument("--key-file", type=Path, help="the key the archive was signed with")
    into.add_argument(
        "--trusted",
        action="store_true",
        help="load an unsigned archive (its pickled models run code when loaded)",
    )
    into.add_argument("--force", action="store_true", help="replace a data dir that is not empty")
    into.add_argument(
        "--max-bytes", type=int, default=None, help="largest archive accepted (default 8 GiB)"
    )


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigurationError(f"--key-file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"--key-file {path}: at least {MIN_KEY_BYTES} bytes")
    return key


def run(args: argparse.Namespace) -> int:
    from streamml.modelserver import archive

    key = _key(args.key_file)
    if args.action == "export":
        manifest = archive.export(args.data_dir, args.out, key=key)
        signed = "signed" if manifest.hmac else "unsigned"
        print(
            f"{args.out}: {len(manifest.models)} models, {manifest.learn_log_rows} learn-log "
            f"rows, {manifest.files[archive.DATABASE].size} bytes ({signed})"
        )
        return 0
    limit = args.max_bytes if args.max_bytes is not None else archive.DEFAULT_MAX_BYTES
    archive.import_archive(
        args.archive, args.data_dir, force=args.force, key=key, trusted=args.trusted,
        max_bytes=limit,
    )  # fmt: skip
    print(f"{args.data_dir}: imported {args.archive}")
    return 0
