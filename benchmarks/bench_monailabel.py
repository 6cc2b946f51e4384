"""Click latency through MONAI Label's REST API against the engine's own, in the same run.

Usage: python benchmarks/bench_monailabel.py --server URL --image SERIES_UID --series FOLDER
           [--repeats 5] [--json out.json]

Against a running ``fastsam3d monailabel`` serving the seeded FastSAM3D (``--weights``: a file of
the golden references' seeded weights) on the series stored in its PACS, with FOLDER the same
series on disk. Each repeat is a new label: its first point opens a crop nobody has encoded
(encoder + decoder), then one point is added to it (decoder only, its crop's embedding cached).
The client's time (request, label file and reply included) and the server's own (``server_ms``)
are set against the engine's :class:`Session` doing the same clicks in this process. Prints the
CPU; medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
import uuid

import torch
from seeded import seeded_model

from fastsam3d_core.benchmark.machine import cpu_name
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import ModelPredictor, Session

#: The label's file as OHIF asks for it: raw uint8 NRRD.
OHIF_LABEL = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}


def rest_click(server: str, image: str, params: dict) -> tuple[float, dict]:
    """One ``/infer/fastsam3d`` request with the label as OHIF asks for it: (client seconds,
    the reply's ``fastsam3d`` report)."""
    params = {**params, **OHIF_LABEL}
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n"
            f"{json.dumps(params)}\r\n--{boundary}--\r\n").encode()  # fmt: skip
    request = urllib.request.Request(
        f"{server}/infer/fastsam3d?image={image}&output=all", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as answer:
        reply = answer.read()
    seconds = time.perf_counter() - start
    report = reply.split(b'{"label_names"', 1)[1].split(b"\r\n", 1)[0]
    return seconds, json.loads(b'{"label_names"' + report)["fastsam3d"]


def points(repeat: int) -> tuple[list[int], list[int]]:
    """A new crop's first point and a point added beside it, different for each repeat."""
    first = [250 + 6 * repeat, 260, 10]
    return first, [first[0] + 5, first[1] - 4, 10]


def measure(args: argparse.Namespace) -> dict:
    volume = read_volume(args.series)
    session = Session(volume, ModelPredictor(seeded_model("fastsam3d")))
    times: dict[str, list[float]] = {key: [] for key in (
        "rest_first", "rest_added", "server_first", "server_added", "engine_first",
        "engine_added")}  # fmt: skip
    rest_click(args.server, args.image, {"foreground": [[5, 5, 1]], "label": "warm-up"})
    for repeat in range(args.repeats):
        first, added = points(repeat)
        label = f"bench-{uuid.uuid4().hex[:8]}"
        seconds, report = rest_click(args.server, args.image,
                                     {"foreground": [first], "label": label})  # fmt: skip
        assert report["encoder_runs"] == 1, report
        times["rest_first"].append(seconds)
        times["server_first"].append(report["server_ms"] / 1000)
        seconds, report = rest_click(args.server, args.image,
                                     {"foreground": [first, added], "label": label})  # fmt: skip
        assert (report["decoded"], report["encoder_runs"]) == (1, 0), report
        times["rest_added"].append(seconds)
        times["server_added"].append(report["server_ms"] / 1000)
        session.new_segment()
        result = session.add_point_ijk(first)
        assert result.encoder_ran
        times["engine_first"].append(result.seconds)
        times["engine_added"].append(session.add_point_ijk(added).seconds)
    medians = {key: round(statistics.median(values) * 1000, 1) for key, values in times.items()}
    return {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats, "median_ms": medians}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="MONAI Label's URL")
    parser.add_argument("--image", required=True, help="the series' SeriesInstanceUID")
    parser.add_argument("--series", required=True, help="the same series' folder on disk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = measure(args)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
