"""``ptmt testbed``: a real kernel with a real lower memory tier, in QEMU, on any Linux x86-64 host."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ptmt.testbed.provision import TestbedUnavailable, cache_dir, ensure_setup
from ptmt.testbed.vm import TierVM, Topology, choose_accel

testbed_app = typer.Typer(
    help="Boot Debian's 6.12 kernel in QEMU with a CPU-less slow NUMA node in a lower memory tier "
         "and run commands inside it (see docs/testbed.md).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

FastOpt = Annotated[int, typer.Option("--fast-mb", help="Fast node (node0, with the CPUs), MiB.")]
SlowOpt = Annotated[int, typer.Option("--slow-mb", help="Slow CPU-less node (node1), MiB.")]
CpusOpt = Annotated[int, typer.Option("--cpus", help="Guest CPUs (all on node0).")]
FastLat = Annotated[int, typer.Option("--fast-latency", help="HMAT access latency of node0, ns.")]
SlowLat = Annotated[int, typer.Option("--slow-latency", help="HMAT access latency of node1, ns.")]
FastBw = Annotated[str, typer.Option("--fast-bandwidth", help="HMAT bandwidth of node0 (QEMU size/s, e.g. 20G).")]
SlowBw = Annotated[str, typer.Option("--slow-bandwidth", help="HMAT bandwidth of node1.")]
DistOpt = Annotated[int, typer.Option("--distance", help="SLIT distance node0<->node1.")]
HmatOpt = Annotated[bool, typer.Option("--hmat/--no-hmat", help="Describe the nodes in ACPI HMAT (without it node1 joins the top tier).")]
KargOpt = Annotated[list[str] | None, typer.Option("--kernel-arg", help="Extra kernel command-line argument; repeatable.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Hard limit for the whole run, boot included, seconds.")]
OutOpt = Annotated[Path | None, typer.Option("--outdir", help="Folder for stdout/stderr/console (writable in the guest at the same path as $TIERVM_OUT).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(e: Exception) -> None:
    typer.echo(f"ptmt: error: {e}", err=True)
    raise typer.Exit(1)


@testbed_app.command()
def setup(json_out: JsonOpt = False) -> None:
    """Install qemu/busybox from apt, unpack the kernel into the cache, build the initramfs (idempotent)."""
    try:
        s = ensure_setup(log=lambda m: typer.echo(f"ptmt testbed: {m}", err=True))
    except TestbedUnavailable as e:
        _fail(e)
        return
    accel, why = choose_accel(s.qemu)
    info = {**s.as_dict(), "accel": accel, "accel_reason": why}
    if json_out:
        typer.echo(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            typer.echo(f"{k:16} {v}")


@testbed_app.command(context_settings={"allow_interspersed_args": False})
def run(
    command: Annotated[list[str], typer.Argument(help="Command to run in the guest (host paths; put it after --).")],
    fast_mb: FastOpt = 1024, slow_mb: SlowOpt = 1024, cpus: CpusOpt = min(2, os.cpu_count() or 1),
    fast_latency: FastLat = 100, slow_latency: SlowLat = 400,
    fast_bandwidth: FastBw = "20G", slow_bandwidth: SlowBw = "4G", distance: DistOpt = 28,
    hmat: HmatOpt = True, kernel_arg: KargOpt = None, timeout: TimeoutOpt = 600,
    outdir: OutOpt = None,
    console: Annotated[bool, typer.Option("--console", help="Echo the guest's serial console while it runs.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Boot a guest, run COMMAND inside (as root, cwd = this folder), print its output, exit with its status.

    Exit status 124: hard timeout; 125: the guest did not boot or reported no status.
    """
    try:
        topo = Topology(fast_mb=fast_mb, slow_mb=slow_mb, cpus=cpus, fast_latency_ns=fast_latency,
                        slow_latency_ns=slow_latency, fast_bandwidth=fast_bandwidth,
                        slow_bandwidth=slow_bandwidth, distance=distance, hmat=hmat)
        vm = TierVM(topo, kernel_args=kernel_arg or [],
                    log=lambda m: typer.echo(f"ptmt testbed: {m}", err=True))
    except (TestbedUnavailable, ValueError) as e:
        _fail(e)
        return
    echo = (lambda line: sys.stderr.write(line)) if console else None
    r = vm.run(command, timeout=timeout, outdir=outdir, on_console=echo)
    if json_out:
        typer.echo(json.dumps({"returncode": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
                               "accel": r.accel, "boot_seconds": r.boot_seconds,
                               "total_seconds": round(r.total_seconds, 2), "timed_out": r.timed_out,
                               "error": r.error, "outdir": str(r.outdir)}, indent=2))
    else:
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        boot = f"{r.boot_seconds:.1f}s" if r.boot_seconds is not None else "never"
        typer.echo(f"ptmt testbed: rc={r.returncode} accel={r.accel} boot={boot} "
                   f"total={r.total_seconds:.1f}s output in {r.outdir}"
                   + (f" ({r.error})" if r.error else ""), err=True)
    if r.timed_out:
        raise typer.Exit(124)
    raise typer.Exit(r.returncode if r.returncode is not None else 125)


@testbed_app.command()
def tiering(
    cold_mb: Annotated[int, typer.Option(help="Cold hog on the fast node, MiB.")] = 800,
    hot_mb: Annotated[int, typer.Option(help="Hot set started on the slow node, MiB.")] = 250,
    seconds: Annotated[float, typer.Option(help="How long the hot set runs.")] = 15,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KNOB=VALUE for the scenario; repeatable.")] = None,
    timeout: TimeoutOpt = 300, json_out: JsonOpt = False,
) -> None:
    """Run the promotion/demotion scenario in a guest and print the counter deltas."""
    try:
        vm = TierVM(log=lambda m: typer.echo(f"ptmt testbed: {m}", err=True))
    except TestbedUnavailable as e:
        _fail(e)
        return
    args = [sys.executable, "-m", "ptmt.testbed.workload", "scenario", "--cold-mb", str(cold_mb),
            "--hot-mb", str(hot_mb), "--seconds", str(seconds)]
    for kv in set_ or []:
        args += ["--set", kv]
    r = vm.run(args, timeout=timeout)
    if not r.ok:
        typer.echo(r.describe(), err=True)
        raise typer.Exit(1)
    res = json.loads(r.stdout)
    if json_out:
        typer.echo(json.dumps(res, indent=1))
        return
    typer.echo(f"tiers: {res['tiers']}  settings: {res['settings']}")
    typer.echo(f"hot set on the slow node: {res['hot_on_slow_mb_start']} MiB -> {res['hot_on_slow_mb_end']} MiB "
               f"in {res['elapsed']} s")
    for k, v in res["delta"].items():
        typer.echo(f"  {k:24} {v:>10}")


@testbed_app.command()
def fidelity(outdir: OutOpt = None) -> None:
    """Run the fidelity workload under each case's two settings in a guest; print a markdown table."""
    from ptmt.testbed import fidelity as fid

    try:
        vm = TierVM(log=lambda m: typer.echo(f"ptmt testbed: {m}", err=True))
    except TestbedUnavailable as e:
        _fail(e)
        return
    out = outdir or cache_dir() / "fidelity"
    real = fid.run_real(vm, Path(out))
    sim = None
    if fid.sim_available() is None:
        try:
            sim = fid.run_sim()
        except NotImplementedError as e:
            typer.echo(f"ptmt testbed: simulated side skipped: {e}", err=True)
    typer.echo(fid.markdown(real, sim), nl=False)
