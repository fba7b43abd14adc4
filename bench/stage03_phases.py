"""Where stage 03's memory goes: resident set per phase at 10^3 … 10^7 network edges.

For each edge count writes synthetic 02a/02b files (tests/util_stage03.py layouts; random pairs,
~85 % of them kept in E) for one reference gene, then runs stage 03 on it in a child process
that samples its resident set (VmRSS, every 2 ms) and attributes the samples to the phase
running: reading (chunks, kept edges), filter/classify, the rest of the network (the edge
table written, summaries), the three
topologies (adjacency, triangle two-paths, components), focus metrics and writing. Reports
per phase the peak above the process's resident set before the gene (MiB), the whole
process's peak (VmHWM) and the stage's estimate.

    .venv/bin/python bench/stage03_phases.py [--n-genes 12625] [--edges 1000,10000,...] [--out FILE]

Runs on whatever machine it is started on (here a shared 2-core machine under load: the
memory figures do not depend on load, the times do).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from util_stage03 import gene_names, make_edges, random_pairs, write_inputs  # noqa: E402

MiB = 2**20


def rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(base: str, boot: str, out: str, gene: int, result: str) -> None:
    """Run stage 03 for ``gene`` in this process, sampling the resident set per phase."""
    import dcoex.stages.s03_network.build as build
    import dcoex.stages.s03_network.cli as cli

    peaks: dict[str, int] = {}
    phase = ["start"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            r = rss_bytes()
            peaks[phase[0]] = max(peaks.get(phase[0], 0), r)
            time.sleep(0.002)

    def wrap(module, name: str, label: str | None = None) -> None:
        fn = getattr(module, name)

        def wrapped(*args, **kwargs):
            before = phase[0]
            phase[0] = label or name
            try:
                return fn(*args, **kwargs)
            finally:
                peaks[phase[0]] = max(peaks.get(phase[0], 0), rss_bytes())
                phase[0] = before

        setattr(module, name, wrapped)

    wrap(cli, "read_gene_inputs", "read")
    wrap(cli, "write_network", "write")
    calls = {"n": 0}
    topo = build.global_topology

    def topology(*args, **kwargs):
        calls["n"] += 1
        before = phase[0]
        phase[0] = f"topology_{('low', 'high', 'diff')[(calls['n'] - 1) % 3]}"
        try:
            return topo(*args, **kwargs)
        finally:
            peaks[phase[0]] = max(peaks.get(phase[0], 0), rss_bytes())
            phase[0] = before

    build.global_topology = topology
    for name in ("select_edges", "presence", "classify"):
        wrap(build, name, "classify")
    wrap(build, "neighbourhood", "focus")
    wrap(build, "focus_metrics", "focus")
    recon = cli.reconstruct

    def reconstruct(*args, **kwargs):
        phase[0] = "network_other"
        try:
            return recon(*args, **kwargs)
        finally:
            phase[0] = "after"

    cli.reconstruct = reconstruct
    baseline = rss_bytes()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.process_time()
    cli.run_network(base, boot, out, genes=[gene], force=True)
    cpu = time.process_time() - t0
    stop.set()
    thread.join()
    side = next((Path(out) / "memory").glob("*.memory.json"))
    rec = json.loads(side.read_text())
    Path(result).write_text(json.dumps({
        "baseline_rss_bytes": baseline, "phase_peak_rss_bytes": peaks, "vmhwm_bytes": rss_bytes("VmHWM"),
        "estimate_bytes": rec["estimate_bytes"], "recorder_peak_bytes": rec["peak_rss_bytes"], "cpu_s": round(cpu, 3),
        "per_gene": rec["per_gene"],
    }))


@click.command()
@click.option("--n-genes", default=12_625, show_default=True)
@click.option("--edges", default="1000,10000,100000,1000000,7000000", show_default=True,
              help="Candidate edge counts |E0| (comma-separated).")
@click.option("--out", default=None, help="JSON file (default bench/results/stage03_phases_<N>.json).")
@click.option("--child-args", default=None, hidden=True)
def main(n_genes: int, edges: str, out: str | None, child_args: str | None) -> None:
    if child_args:
        child(*json.loads(child_args))
        return
    names = gene_names(n_genes)
    work = Path(tempfile.mkdtemp(prefix="bench03p-", dir=os.environ.get("TMPDIR")))
    rows = []
    try:
        for k, m in enumerate(int(x) for x in edges.split(",")):
            rng = np.random.default_rng(k)
            m = min(m, n_genes * (n_genes - 1) // 2)
            gi, gj = random_pairs(n_genes, m, rng)
            e = make_edges(gi, gj, rng.uniform(-1, 1, m), rng.uniform(-1, 1, m),
                           sig_low=rng.random(m) < 0.7, sig_high=rng.random(m) < 0.7)
            straddle = rng.random(m) < 0.15
            e["ci_low"][straddle], e["ci_high"][straddle] = -0.01, 0.01
            focus = int(gi[0])
            del gi, gj
            write_inputs(work / "base", work / "boot", focus, names, e)
            del e
            res = work / f"res{k}.json"
            t0 = time.perf_counter()
            args = json.dumps([str(work / "base"), str(work / "boot"), str(work / f"net{k}"), focus, str(res)])
            proc = subprocess.run([sys.executable, __file__, "--child-args", args], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr)
            r = json.loads(res.read_text())
            gene = next(iter(r["per_gene"].values()))
            row = {"n_genes": n_genes, "candidate_edges": gene["n_candidate_edges"], "network_edges": gene["n_edges"],
                   "peak_rss_bytes": r["vmhwm_bytes"], "estimate_bytes": r["estimate_bytes"],
                   "peak_over_estimate": round(r["vmhwm_bytes"] / r["estimate_bytes"], 4),
                   "baseline_rss_bytes": r["baseline_rss_bytes"],
                   "phase_peak_above_baseline_mib": {p: round((v - r["baseline_rss_bytes"]) / MiB, 1)
                                                     for p, v in r["phase_peak_rss_bytes"].items()},
                   "cpu_s": r["cpu_s"], "process_wall_s": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(work / "base")
            shutil.rmtree(work / "boot")
            shutil.rmtree(work / f"net{k}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = Path(out) if out else ROOT / "bench" / "results" / f"stage03_phases_{n_genes}.json"
    path.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                "note": "shared 2-core machine under load; memory figures do not depend on load"},
                               indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
