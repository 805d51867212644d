"""``python -m lstm_research.data download [ptb|jsb|all] [--data_dir DIR] [--mirror URL]``.

Downloads the real data sets from their canonical sources (or ``--mirror URL``, which serves
``URL/<relpath>`` such as ``URL/ptb/ptb.train.txt``) into the data dir (default
``$LSTM_RESEARCH_DATA``, else ``~/.cache/lstm_research/data``), verifying every file's sha256.
Exit status 0, or 2 with one line ``error: ...`` (an unreachable URL, a wrong file, a bad
argument).
"""
from __future__ import annotations

import argparse
import sys

from lstm_research.data import download, files
from lstm_research.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad argument is a UserError: one line, exit status 2
        raise UserError(f"{message}; see python -m lstm_research.data download --help")


def parse_args(argv):
    parser = _Parser(prog="python -m lstm_research.data",
                     description="Download the real data sets (sha256 verified).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    dl = sub.add_parser("download", help="download PTB and/or JSB Chorales into the data dir")
    dl.add_argument("dataset", nargs="?", default="all", choices=[*files.DATASETS, "all"],
                    help="which data set (default: all)")
    dl.add_argument("--data_dir", default=None,
                    help=f"where to put the files (default: ${files.DATA_ENV_VAR}, else "
                         f"~/.cache/lstm_research/data; now {files.default_data_dir()})")
    dl.add_argument("--mirror", default=None, metavar="URL",
                    help="fetch URL/<relpath> (e.g. URL/ptb/ptb.train.txt) instead of the "
                         "canonical sources; a folder path (an offline copy of a data dir) "
                         "works too")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        names = list(files.DATASETS) if args.dataset == "all" else [args.dataset]
        for name in names:
            download.download(name, args.data_dir, args.mirror)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
