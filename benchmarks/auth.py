"""What the API-key check costs a one-row prediction: the service with and without keys,
side by side.

    python benchmarks/auth.py                 # about 3 minutes on 2 cores
    python benchmarks/auth.py --seconds 5 --rounds 2

The same service (`python -m serving`, one worker, the exported champion) is started
three ways, in rounds that alternate between them so that a busy spell on this shared
machine hits all of them:

  open      no key set: no check runs at all (the ceiling: the same load, the work removed)
  2 keys    SERVING_API_KEYS with two keys (a rotation), a valid key sent
  10 keys   ten keys (every key is compared on every request), a valid key sent

and, on the 2-key service, requests without a key (each answered 401): what a caller
that guesses costs the service. Loads: one row, one connection (latency) and eight
connections (throughput), with wrk on loopback. Over loopback the machine's noise is
larger than the check, so the same open/keyed pair is also timed in one process (the
app called through httpx's ASGI transport, no sockets, interleaved rounds, medians), and
the check itself (ApiKeys.accepts, a SHA-256 and a comparison per key) alone with timeit.

Results go to benchmarks/results/auth.json and, as Markdown, auth.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the project's modules must be importable
from benchmarks.serving import (  # noqa: E402
    BIN,
    RESULTS,
    SCRATCH,
    Server,
    _bodies,
    _machine,
    _model_folder,
    _running,
    _wrk,
)
from serving.auth import ApiKeys  # noqa: E402
from serving.keys import HEADER  # noqa: E402

KEYS = [secrets.token_urlsafe(32) for _ in range(10)]
LOADS = {"single_sequential": 1, "single_8_clients": 8}


def main() -> None:
    arguments = _arguments()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model = _model_folder(arguments.model)
    body = _bodies(model)["one"]
    variants = _variants(model, body)
    rounds: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(arguments.rounds):
        for name, (server, headers) in variants.items():
            print(f"round {round_index + 1}: {name}", flush=True)
            rounds.setdefault(name, []).append(_measure(server, headers, arguments.seconds))
            if name == "2 keys":
                print(f"round {round_index + 1}: 2 keys, no key sent (401)", flush=True)
                rounds.setdefault("no key sent (401)", []).append(
                    _measure(server, {}, arguments.seconds, rejected=True)
                )
    print("in one process: open and 2 keys, interleaved", flush=True)
    results = {
        "machine": _machine(),
        "seconds_per_run": arguments.seconds,
        "rounds": rounds,
        "in_process_us": _in_process(model, body),
        "check_alone_us": _check_alone(),
        "summary": _summary(rounds),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "auth.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = _markdown(results)
    (RESULTS / "auth.md").write_text(markdown)
    print(markdown)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: export champion)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def _variants(model: Path, body: Path) -> dict[str, tuple[Server, dict[str, str]]]:
    base = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "SERVING_MODEL_URI": str(model),
        "SERVING_WORKERS": "1",
        "SERVING_LOG_LEVEL": "warning",
    }
    base = {k: v for k, v in base.items() if not k.startswith("SERVING_API_KEYS")}

    def server(env: dict[str, str]) -> Server:
        # /health: the keyed services answer /ready only with a key.
        return Server("service", [str(BIN / "python"), "-m", "serving"], env, "/health",
                      "/predict", body, None)  # fmt: skip

    return {
        "open": (server(base), {}),
        "2 keys": (server({**base, "SERVING_API_KEYS": ",".join(KEYS[:2])}), {HEADER: KEYS[1]}),
        "10 keys": (server({**base, "SERVING_API_KEYS": ",".join(KEYS)}), {HEADER: KEYS[9]}),
    }


def _measure(
    server: Server, headers: dict[str, str], seconds: float, *, rejected: bool = False
) -> dict[str, Any]:
    with _running(server) as (port, _):
        url = f"http://127.0.0.1:{port}{server.predict_path}"
        _wrk(url, server.body_one, connections=1, seconds=2, headers=headers, strict=not rejected)
        measured = {
            load: _wrk(
                url,
                server.body_one,
                connections=connections,
                seconds=seconds,
                headers=headers,
                strict=not rejected,
            )
            for load, connections in LOADS.items()
        }
    for load, run in measured.items():
        # The rejected runs must be all 401s, the others all 2xx (_wrk checked those).
        if rejected and run["non_2xx"] != run["requests"]:
            raise RuntimeError(f"{load}: {run['non_2xx']} of {run['requests']} were refused")
    return measured


def _in_process(model: Path, body: Path, rounds: int = 8, calls: int = 2000) -> dict[str, Any]:
    """Microseconds per one-row POST /predict, app called in-process; medians of rounds."""
    import asyncio  # noqa: PLC0415

    from serving.app import create_app  # noqa: PLC0415
    from serving.settings import Settings  # noqa: PLC0415

    row = json.loads(body.read_text())

    async def timed(keys: str | None, headers: dict[str, str]) -> float:
        import httpx  # noqa: PLC0415

        log = SCRATCH / f"in-process-{'keyed' if keys else 'open'}.db"
        settings = Settings(model_uri=str(model), prediction_log=log, api_keys=keys)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for _ in range(300):  # warm-up
                    answer = await client.post("/predict", json=row, headers=headers)
                    answer.raise_for_status()
                started = time.perf_counter()
                for _ in range(calls):
                    await client.post("/predict", json=row, headers=headers)
                return (time.perf_counter() - started) / calls * 1e6

    measured: dict[str, list[float]] = {"open": [], "2 keys": []}
    for _ in range(rounds):
        measured["open"].append(asyncio.run(timed(None, {})))
        measured["2 keys"].append(asyncio.run(timed(",".join(KEYS[:2]), {HEADER: KEYS[1]})))
    medians = {name: statistics.median(values) for name, values in measured.items()}
    return {
        "rounds": {name: [round(v, 1) for v in values] for name, values in measured.items()},
        "median_us": {name: round(value, 1) for name, value in medians.items()},
        "cost_us": round(medians["2 keys"] - medians["open"], 1),
        "cost_share": round(medians["2 keys"] / medians["open"] - 1, 4),
    }


def _check_alone() -> dict[str, float]:
    """ApiKeys.accepts alone, in microseconds a call, for a valid key."""
    timings = {}
    for count in (1, 2, 10):
        keys = ApiKeys(KEYS[:count])
        presented = KEYS[count - 1]
        calls = 200_000
        check = functools.partial(keys.accepts, presented)
        best = min(timeit.repeat(check, number=calls, repeat=5))
        timings[f"{count} key(s)"] = round(best / calls * 1e6, 3)
    return timings


def _summary(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per load: the best round of each variant, and each variant's ratio to `open` in
    the same round (its rounds ran minutes apart from the others' at most)."""
    summary: dict[str, Any] = {}
    for load in LOADS:
        best = {
            name: max(runs, key=lambda run: run[load]["requests_per_second"])[load]
            for name, runs in rounds.items()
        }
        ratios = {
            name: [
                round(run[load]["requests_per_second"] / opened[load]["requests_per_second"], 3)
                for run, opened in zip(runs, rounds["open"], strict=True)
            ]
            for name, runs in rounds.items()
            if name != "open"
        }
        summary[load] = {"best": best, "throughput_vs_open_per_round": ratios}
    return summary


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "# The API-key check on one row",
        "",
        f"{results['machine']['cpus']} cores; {results['seconds_per_run']:.0f} s per run, "
        f"{len(results['rounds']['open'])} alternating rounds, best round shown; ratios are "
        "to the open service in the same round.",
        "",
        "| service | load | requests/s | p50 | p99 | throughput vs open (each round) |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for load, figures in results["summary"].items():
        for name, run in figures["best"].items():
            ratios = figures["throughput_vs_open_per_round"].get(name)
            shown = ", ".join(f"{ratio:.2f}" for ratio in ratios) if ratios else "1 (the ceiling)"
            lines.append(
                f"| {name} | {load.replace('_', ' ')} | {run['requests_per_second']:,.0f} | "
                f"{run['p50_us'] / 1000:.2f} ms | {run['p99_us'] / 1000:.2f} ms | {shown} |"
            )
    alone = ", ".join(f"{n}: {us:.2f} µs" for n, us in results["check_alone_us"].items())
    inside = results["in_process_us"]
    lines += [
        "",
        f"In one process (no sockets; median of {len(inside['rounds']['open'])} interleaved "
        f"rounds): open {inside['median_us']['open']:.0f} µs, 2 keys "
        f"{inside['median_us']['2 keys']:.0f} µs a one-row prediction: the check costs "
        f"{inside['cost_us']:.0f} µs ({inside['cost_share']:+.1%}).",
        "",
        f"The check alone (ApiKeys.accepts, a valid key): {alone} a call.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
