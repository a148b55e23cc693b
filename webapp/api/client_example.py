"""A tiny Kensa API client: standard library only. Copy it next to your camera software and adapt.

KENSA_TOKEN=kensa_... python client_example.py http://kensa.local:8000/api/v1 <project-id> part.png
"""

import json
import os
import sys
import urllib.error
import urllib.request


def predict(api_url: str, project_id: str, token: str, image: bytes, content_type: str = "image/png") -> dict:
    """POSTs the raw image bytes and returns the JSON answer; a 4xx/5xx raises with the server's message."""
    request = urllib.request.Request(
        f"{api_url}/projects/{project_id}/predict/",
        data=image,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{error.code}: {error.read().decode()}") from None


if __name__ == "__main__":
    api_url, project_id, path = sys.argv[1:4]
    with open(path, "rb") as handle:
        answer = predict(api_url, project_id, os.environ["KENSA_TOKEN"], handle.read())
    verdict = "DEFECT" if answer["is_anomalous"] else "good"
    print(f"{path}: {verdict} (score {answer['score']:.4g}, threshold {answer['threshold']:.4g})")
    for box in answer["boxes"]:
        print(f"  region x {box['x0']}..{box['x1']}, y {box['y0']}..{box['y1']}, {box['area']} px")
