"""``mambacsr-rt upscale --ray``: the same upscale, spread over Ray actors.

Each worker is a Ray actor that loads the model once (the same model flags, backend and run plan
as the one-process path, through :func:`runtime.jobs.open_upscaler`) and upscales whole images.
The driver keeps the rules of the one-process path: it runs the jobs that
:func:`runtime.cli.plan_upscale` planned (input collection, output naming, ``--skip-existing``,
inputs never overwritten), reports failures by name and writes every output.

Data goes through Ray, not through a filesystem: the driver sends each input's bytes and the worker
sends the *encoded* output bytes back; the driver writes them atomically
(:func:`runtime.imageio.write_encoded`). So workers on other nodes need no shared or writable
output path, a worker killed mid-write cannot leave half a file, and each output is written once,
by one process, whatever retries happened. Only the model files must be readable on every node.

Fault tolerance: actors restart (``max_restarts``) and re-run the call they were killed in
(``max_task_retries``); an image whose worker is gone for good is resubmitted to another worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import deque
from pathlib import Path

from runtime.errors import UserError

INSTALL = 'pip install -e ".[ray]"'
WORKER_PREFIX = "mambacsr-rt-worker"
MAX_RESTARTS = 3  # per actor: a worker that keeps dying is dropped, its images go elsewhere
MAX_ATTEMPTS = 3  # per image, across workers: an image that kills every worker it meets fails
IN_FLIGHT = 2  # calls queued per worker: one running, one waiting, so a worker never idles on I/O


def import_ray(args=None):
    """The ray module, or a one-line UserError (exit 2) naming the install command."""
    if args is not None and args.ray not in ("local", "auto") and Path(args.ray).exists():
        raise UserError(f"--ray took {args.ray} as its cluster address: write --ray=ADDRESS, or put "
                        f"--ray after the inputs")
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


class UpscaleWorker:
    """One model load; then whole images in (file bytes), encoded images out (bytes)."""

    def __init__(self, args: argparse.Namespace):
        from runtime.jobs import open_upscaler
        self.args = args
        self.error = self.line = None
        try:
            self.up, self.line = open_upscaler(args, log=lambda m: None)
        except UserError as e:  # reported once by the driver, as the one-process path does
            self.error = str(e)

    def ready(self) -> tuple[str | None, str | None]:
        return self.error, self.line

    def upscale(self, name: str, data: bytes) -> dict:
        """Decode, upscale, encode one image. Failures come back as values, not exceptions, so
        a bad image is reported by name and is never retried as if the worker had died."""
        from runtime.jobs import IMAGE_FAILURES, failure_message, tiles_used, upscale_image
        from runtime.imageio import encode_image, read_image
        t0 = time.perf_counter()
        # the decoder reads files: a private copy under the input's own name (messages name it)
        with tempfile.TemporaryDirectory(prefix="mambacsr-rt-") as d:
            tmp = Path(d) / Path(name).name
            try:
                tmp.write_bytes(data)
                img = read_image(tmp)
                n_tiles = self.up.num_tiles(img)
                res = upscale_image(self.up, self.args, img)
                out = encode_image(res, self.args.format, self.args.quality)
            except UserError as e:
                return {"user_error": str(e)}
            except IMAGE_FAILURES as e:
                return {"error": failure_message(tmp, e).replace(str(tmp), name)}
        return {"data": out, "notes": img.notes, "size": img.size, "out_size": res.size,
                "out_pixels": res.pixels.shape[0] * res.pixels.shape[1],
                "how": tiles_used(self.up, img, n_tiles), "secs": time.perf_counter() - t0}


def _worker_shape(ray, args) -> tuple[int, float, int]:
    """(workers, GPUs per worker, CPUs per worker) from the flags and the cluster's resources."""
    res = ray.cluster_resources()
    gpus, cpus = res.get("GPU", 0.0), int(res.get("CPU", 1)) or 1
    gpw = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if gpw > 0 and gpus < gpw:
        raise UserError(f"--gpus-per-worker {gpw:g} but the Ray cluster has {gpus:g} GPU(s): "
                        f"pass --gpus-per-worker 0 to run on CPUs")
    workers = args.workers or (max(1, int(gpus // gpw)) if gpw > 0 else 2)
    cpw = 1 if gpw > 0 else max(1, cpus // workers)  # CPU-only: the cores are shared out
    return workers, gpw, cpw


def upscale(args, jobs: list[tuple[Path, Path]], failures: list[tuple[str, str]], skipped: list,
            log=print) -> int:
    """Run ``jobs`` (planned (input, output) pairs) on Ray workers; same report and exit code as
    the one-process path."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():  # an embedding program's (or a test's) Ray is used as it is
        address = None if args.ray == "local" else args.ray
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"--ray {args.ray}: cannot start or reach Ray ({str(e).splitlines()[0]}): "
                            f"check the address (auto, ray://host:10001) or `ray status`") from None
        started = True
    actors: dict = {}  # actor -> name, for the workers still in use
    try:
        n, gpw, cpw = _worker_shape(ray, args)
        wargs = argparse.Namespace(**vars(args))
        if gpw == 0 and args.threads is None:
            wargs.threads = cpw
        if gpw == 0 and args.device == "auto":
            wargs.device = "cpu"
        cls = ray.remote(UpscaleWorker)
        stamp = f"{os.getpid()}-{time.time_ns()}"
        booting = {}
        for i in range(n):
            name = f"{WORKER_PREFIX}-{stamp}-{i}"
            a = cls.options(name=name, num_cpus=cpw, num_gpus=gpw, max_restarts=MAX_RESTARTS,
                            max_task_retries=MAX_RESTARTS).remote(wargs)
            actors[a] = name
            booting[a.ready.remote()] = a
        log(f"Ray: {n} worker(s), {gpw:g} GPU and {cpw} CPU each; loading the model")
        return _drive(ray, args, jobs, failures, skipped, actors, booting, log)
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        if started:
            ray.shutdown()


def _drive(ray, args, jobs, failures, skipped, actors, booting, log):
    """Stream inputs to ready workers (IN_FLIGHT each), write results as they finish."""
    from ray.exceptions import RayActorError, RayError

    from runtime.jobs import failure_message, report_upscale
    from runtime.jobs import log as _log
    from runtime.imageio import write_encoded
    queue = deque((src, dst, 0) for src, dst in jobs)
    ready: list = []
    load: dict = {}
    inflight: dict = {}  # ref -> (src, dst, attempts, actor)
    written: set = set()
    done = out_pixels = 0
    t_start = last = time.perf_counter()
    planned_failures = len(failures)

    def fail(src, msg):
        failures.append((str(src), msg))
        _log(f"FAILED {src}: {msg}")

    def drop(actor):
        if actor in ready:
            ready.remove(actor)
        actors.pop(actor, None)

    while queue or inflight:
        for actor in list(ready):
            while queue and load[actor] < IN_FLIGHT:
                src, dst, attempts = queue.popleft()
                try:
                    data = Path(src).read_bytes()
                except OSError as e:
                    fail(src, failure_message(src, e))
                    continue
                inflight[actor.upscale.remote(str(src), data)] = (src, dst, attempts, actor)
                load[actor] += 1
        if not ready and not booting:
            for src, _, _ in queue:
                fail(src, "no Ray worker left (every worker died or could not start)")
            queue.clear()
            if not inflight:
                break
        refs = list(inflight) + list(booting)
        finished, _ = ray.wait(refs, num_returns=1, timeout=60)
        if not finished:
            if time.perf_counter() - last > 60 and not ready:
                _log(f"still waiting for Ray workers: the cluster has {ray.available_resources()} free")
                last = time.perf_counter()
            continue
        ref = finished[0]
        if ref in booting:
            actor = booting.pop(ref)
            try:
                error, line = ray.get(ref)
            except RayError as e:
                _log(f"a Ray worker could not start: {str(e).splitlines()[0]}")
                actors.pop(actor, None)
                continue
            if error:
                raise UserError(error)
            if not ready:
                log(line)
            ready.append(actor)
            load[actor] = 0
            continue
        src, dst, attempts, actor = inflight.pop(ref)
        load[actor] = load.get(actor, 1) - 1
        try:
            r = ray.get(ref)
        except RayActorError:  # gone for good after its restarts: its images go to the others
            drop(actor)
            if attempts + 1 < MAX_ATTEMPTS:
                queue.appendleft((src, dst, attempts + 1))
            else:
                fail(src, f"its Ray worker died {MAX_ATTEMPTS} times while upscaling it")
            continue
        except RayError as e:
            fail(src, f"Ray: {str(e).splitlines()[0]}")
            continue
        if "user_error" in r:
            raise UserError(r["user_error"])
        if "error" in r:
            fail(src, r["error"])
            continue
        if dst in written:  # cannot happen with one result per call; never write twice anyway
            continue
        for note in r["notes"]:
            _log(f"{src}: note: {note}")
        try:
            write_encoded(dst, r["data"])
        except OSError as e:
            fail(src, failure_message(src, e))
            continue
        written.add(dst)
        done += 1
        out_pixels += r["out_pixels"]
        (w, h), (ow, oh) = r["size"], r["out_size"]
        log(f"done {src} -> {dst}: {w}x{h} -> {ow}x{oh}, {r['how']}, {r['secs']:.2f} s "
            f"[{done + len(failures) - planned_failures}/{len(jobs)}]")
    return report_upscale(args, done, failures, skipped, time.perf_counter() - t_start, out_pixels)
