"""A stand-in for `vllm bench serve`: takes its flags, opens and closes the capture when given --profile, and
writes a result file `vllm bench serve` wrote on the H200 (tests/data/vllm_serve_h200_rate32/client-result.json)
where --result-dir and --result-filename say."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.request
from pathlib import Path

RESULT = Path(__file__).resolve().parents[1] / "data" / "vllm_serve_h200_rate32" / "client-result.json"


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=10).close()


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--base-url", "--result-dir", "--result-filename", "--tokenizer", "--dataset-name"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--num-prompts", type=int, required=True)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--save-result", action="store_true")
    args, rest = parser.parse_known_args()
    print("stand-in vllm bench serve:", " ".join(sys.argv[1:]), flush=True)
    recorded = json.loads(RESULT.read_text())["num_prompts"]
    if args.num_prompts != recorded:  # the result stands for its own load only
        sys.exit(f"stand-in: the result holds {recorded} prompts, --num-prompts {args.num_prompts} asked")
    if args.profile:
        post(f"{args.base_url}/start_profile")
        post(f"{args.base_url}/stop_profile")
    if args.save_result:
        shutil.copyfile(RESULT, Path(args.result_dir) / args.result_filename)


if __name__ == "__main__":
    main()
