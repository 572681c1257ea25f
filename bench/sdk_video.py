"""The `cli` part's baseline: one video to a file with the bare OpenAI SDK, as a short script would.

    python bench/sdk_video.py BASE_URL PROMPT OUTPUT   # OPENAI_API_KEY from the environment

bench/run.py times this whole process (interpreter start included) against `sora-video`.
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI


def main() -> None:
    base_url, prompt, output = sys.argv[1:4]
    client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "sk-bench")
    video = client.videos.create_and_poll(
        prompt=prompt, model="sora-2", seconds="4", size="1280x720", poll_interval_ms=250
    )
    if video.status != "completed":
        raise SystemExit(f"{video.id} ended {video.status}")
    client.videos.download_content(video.id).write_to_file(output)


if __name__ == "__main__":
    main()
