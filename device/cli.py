"""The ``palm`` command: parses arguments and calls one function per subcommand.

Errors a user can cause (a bad config, a missing file, a wrong argument) are
turned into one line on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device import __version__
from device.config import Config, defaults_for_simulation, load_config
from device.errors import KeyFileError, OutputError, ScannerError, UsageError

Handler = Callable[[argparse.Namespace], int]


def _config_for(args: argparse.Namespace) -> Config:
    if getattr(args, "config", None):
        return load_config(args.config)
    return defaults_for_simulation()


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2  # the simulator's pictures are synthetic; the daemon never calls this

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OutputError(f"cannot encode {path!r} as PNG")
    try:
        Path(path).write_bytes(buf.tobytes())
    except OSError as exc:
        raise OutputError(f"cannot write {path!r}: {exc.strerror}") from None


def cmd_sim(args: argparse.Namespace) -> int:
    from device.hardware import patterns
    from device.sim.scene import SCENE_KINDS, make_scene
    from device.sim.sheet import contact_sheet, render_burst

    config = _config_for(args)
    n = len(config.leds.sector_pins)
    if args.contact_sheet:
        scenes = [make_scene(kind, args.seed, condition=args.condition) for kind in SCENE_KINDS]
        sheet = contact_sheet(config, scenes, exposure_us=args.exposure_us, gain=args.gain)
        _write_png(args.contact_sheet, sheet)
        print(
            f"wrote {args.contact_sheet}: {len(scenes)} scenes x {n + 2} LED patterns "
            f"({sheet.shape[1]}x{sheet.shape[0]}, exposure {args.exposure_us} us, gain {args.gain:g})"
        )
        return 0
    if not args.out:
        raise UsageError("palm sim needs --out FILE.png (one frame) or --contact-sheet FILE.png")
    try:
        patterns.levels(args.pattern, n)
        if args.identity is not None and args.scene != "genuine":
            raise ValueError(f"--identity is a person's palm: it needs --scene genuine, not {args.scene}")
        scene = make_scene(
            args.scene,
            args.seed,
            condition=args.condition,
            distance_mm=args.distance_mm,
            motion=args.motion,
            identity=args.identity,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    (frame,) = render_burst(config, scene, (args.pattern,), exposure_us=args.exposure_us, gain=args.gain)
    _write_png(args.out, frame.pixels)
    print(
        f"wrote {args.out}: scene {scene.kind} seed {args.seed}"
        + (f" identity {args.identity}" if args.identity is not None else "")
        + f" ({scene.condition} light), "
        f"pattern {args.pattern}, {frame.width}x{frame.height}, mean grey "
        f"{float(frame.pixels.mean()):.1f}"
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from device.protocol import SUITE_X25519, SUITE_XWING
    from device.protocol.keys import (
        b64,
        describe_key_file,
        new_recipient_key,
        raw_public,
        write_new_file,
        write_private_key,
    )

    if args.action == "init":
        key = Ed25519PrivateKey.generate()
        write_private_key(Path(args.out), key)
        pub = b64(raw_public(key))
        print(f"wrote device key {args.out} (Ed25519, PKCS#8 PEM, mode 0600)")
        print(f"public key: {pub}")
        print(f"register it with the cloud as: {args.device_id}={pub}")
        print(f"(reference ingest: palm ingest ... --device {args.device_id}={pub})")
        return 0
    if args.action == "show":
        print("\n".join(describe_key_file(Path(args.path))))
        return 0
    suite = {"xwing": SUITE_XWING, "x25519": SUITE_X25519}[args.suite]
    out = Path(args.out)
    pub_path = out.with_name(out.name + ".pub")
    if os.path.lexists(pub_path):  # before the private half is made: never one without the other
        raise KeyFileError(f"{str(pub_path)!r} already exists: a key is never overwritten")
    pem, rec = new_recipient_key(suite)
    write_new_file(out, pem, 0o600)
    raw = rec.public_raw
    write_new_file(pub_path, (b64(raw) + "\n").encode("ascii"), 0o644)
    print(f"wrote recipient private key {out} ({suite}, PKCS#8 PEM, mode 0600): for palm ingest only")
    print(f"wrote recipient public key {pub_path} ({len(raw)} bytes, kid {rec.kid})")
    print(f'for the scanner config, [cloud]: recipient_public_key = "{b64(raw)}"')
    return 0


def cmd_till(args: argparse.Namespace) -> int:
    import json

    from device.till.tills import Tills, tls_files

    state = Path(args.state_dir)
    if not state.is_dir():
        raise UsageError(f"--state-dir {args.state_dir}: no such folder (the scanner's state directory)")
    tills = Tills(state)
    if args.action == "list":
        for name, added in tills.names():
            print(f"{name}  added {added}")
        return 0
    if not args.name:
        raise UsageError(f"palm till {args.action} needs the till's NAME")
    if args.action == "remove":
        tills.remove(args.name)
        print(f"removed till {args.name}: its token no longer arms this scanner")
        return 0
    _, cert, fingerprint = tls_files(state, args.host or ["127.0.0.1"])
    token = tills.add(args.name)
    if args.json:
        print(json.dumps({"till": args.name, "token": token, "fingerprint_sha256": fingerprint}))
        return 0
    print(f"till {args.name} added; its token (shown once, only its hash is kept):")
    print(f"  {token}")
    print(f"the scanner's certificate {cert}, SHA-256 fingerprint (pin it in the till):")
    print(f"  {fingerprint}")
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    from device.sendtest import describe, send_test

    if not 1 <= args.wait <= 120:
        raise UsageError(f"--wait {args.wait:g}: give 1 to 120 seconds")
    config = load_config(args.config)
    capture, d = send_test(config, wait_s=args.wait)
    print(describe(capture, d, config.cloud.endpoint))
    # only the protocol's acknowledgement of this capture by its id (a bare 201 is not one)
    return 0 if d.delivered else 1


def cmd_selftest(args: argparse.Namespace) -> int:
    from device import selftest

    def say(result: selftest.Result) -> None:
        print(result.line(), flush=True)

    if args.simulate:
        for fault in args.fault:
            name = fault.split(":", 1)[0]
            if name not in selftest.SIM_FAULTS or (name == "dead-sector") != (":" in fault):
                raise UsageError(
                    f"--fault {fault!r}: valid are {', '.join(selftest.SIM_FAULTS)} "
                    "(dead-sector as dead-sector:K, K a sector number)"
                )
        config = _config_for(args)
        with selftest.simulated_probes(config, args.fault) as probes:
            results = selftest.run(probes, say)
    else:
        if args.fault:
            raise UsageError("--fault is for the simulated scanner: add --simulate")
        if not args.config:
            raise UsageError("the scanner's config is needed: --config FILE (or --simulate)")
        print("hold the grey card about 12 cm above the window for the LED check", flush=True)
        results = selftest.run(selftest.real_probes(args.config), say)
    failed = [r.name for r in results if r.ok is False]
    print(f"selftest: {'all checks passed' if not failed else 'failed: ' + ', '.join(failed)}")
    return 1 if failed else 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import contextlib
    import signal
    import ssl
    import threading

    from device.ingest.server import Faults, Ingest, IngestServer
    from device.protocol.keys import device_public_from_b64, load_recipient_key

    recipients = [load_recipient_key(Path(p)) for p in args.recipient_key]
    devices = {}
    for spec in args.device:
        device_id, eq, pub = spec.partition("=")
        if not eq or not device_id:
            raise UsageError(f"--device {spec!r} is not ID=PUBKEY")
        devices[device_id] = device_public_from_b64(pub)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the TLS certificate and key: {exc}") from None
    faults = Faults(
        busy_first=args.busy_first,
        retry_after_s=args.retry_after,
        slow_first=args.slow_first,
        slow_s=args.slow_s,
    )
    gallery = None
    if args.enrol is not None:
        from device.ingest import matcher
        from device.ingest.gallery import Gallery

        labels = [x.strip() for x in args.enrol.split(",")]
        if not all(labels):
            raise UsageError(
                f"--enrol {args.enrol!r} has an empty label: give LABEL,LABEL,... in arrival order"
            )
        fmr = matcher.DEFAULT_FMR if args.fmr is None else args.fmr
        if fmr not in matcher.THRESHOLDS:
            known = ", ".join(f"{f:g}" for f in sorted(matcher.THRESHOLDS))
            raise UsageError(f"--fmr {fmr:g} has no measured threshold: one of {known}")
        gallery = Gallery(labels, fmr)
    elif args.fmr is not None:
        raise UsageError("--fmr goes with --enrol")
    ingest = Ingest(recipients=recipients, devices=devices, faults=faults, result=gallery)
    if tls is None:  # waitress, with its limits (device.ingest.wsgi); it speaks no TLS
        from device.ingest.wsgi import IngestApp, make_server

        try:
            import waitress  # noqa: F401 - only to say what is missing
        except ImportError:
            raise UsageError(
                "palm ingest is served by waitress: pip install 'palm-scanner[ingest]' (or waitress)"
            ) from None

        try:
            served: Any = make_server(IngestApp(ingest, sys.stdout), host=args.host, port=args.port)
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
        url = f"http://{args.host}:{served.effective_port}"
        runner = threading.Thread(target=served.run, name="waitress", daemon=True)
        server: Any = contextlib.nullcontext()
        runner.start()
    else:
        try:
            server = IngestServer(ingest, host=args.host, port=args.port, tls=tls, log_stream=sys.stdout)
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
        url = server.url
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        kids = ", ".join(f"{k.kid} ({k.suite})" for k in recipients)
        print(
            f"palm ingest (development only) on {url}/v1/captures: {len(devices)} device(s), "
            f"recipient kid {kids}",
            flush=True,
        )
        if gallery is not None:
            print(
                f"palm ingest: enrols the first capture of each of {len(set(gallery.labels))} label(s) "
                f"and identifies the rest with the reference matcher (threshold {gallery.threshold:.3f}, "
                f"FMR {100 * gallery.fmr:g} % as measured on CASIA 940 nm; a demonstration, not a "
                "production matcher)",
                flush=True,
            )
        stop.wait()
    if tls is None:
        served.close()
    return 0


def _eval_utility(args: argparse.Namespace) -> int:
    """`palm eval --real DIR` or `--identities N --presentations K`: the reference matcher on the
    scanner's crops of labelled images, or of simulated palms."""
    import json

    from device import utility

    if args.session < 1:
        raise UsageError("--session must be at least 1 (shots per session)")
    try:
        if args.real:
            u = utility.measure_folder(Path(args.real), session=args.session)
            source = args.real
        else:
            u = utility.measure_simulated(
                _config_for(args), args.identities, args.presentations, first=args.seed, jobs=args.jobs
            )
            source = f"identities {args.seed}..{args.seed + args.identities - 1}, simulated"
    except utility.UtilityError as exc:
        raise UsageError(str(exc)) from None
    if args.plot:
        from device.det_plot import det_image

        mated = u.mated_scores()
        t = utility.threshold_at(u.non_mated, utility.FMRS[0])
        title = f"DET, reference matcher, {len(u.samples)} crops ({Path(source).name})"
        curve = {"scanner's crops": u.non_mated}  # one curve: mated against non-mated
        _write_png(args.plot, det_image(mated, curve, t, title, axes=("FMR", "FNMR")))
    if args.json:
        print(json.dumps(u.as_json()))
        return 0
    print(f"palm eval: the reference matcher (competitive code) on the scanner's crops of {source}")
    for line in u.lines():
        print(line)
    print(
        "  The matcher is a measuring instrument (device/ingest/matcher.py), not a production one; "
        "refusing low quality should lower FNMR where the quality score predicts utility."
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from device.evaluation import BONA_FIDE, DEV_SEEDS, collect, rates, rig_notes, score_of, sim_flat_field
    from device.sim.scene import ATTACKS
    from device.vision.liveness import default_model

    if args.real or args.identities:
        return _eval_utility(args)
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    seeds = range(args.seed, args.seed + args.samples)
    if seeds.start < DEV_SEEDS.stop and DEV_SEEDS.start < seeds.stop:
        raise UsageError(
            f"seeds {seeds.start}..{seeds.stop - 1} overlap the development seeds "
            f"{DEV_SEEDS.start}..{DEV_SEEDS.stop - 1} the combiner was fitted on: choose fresh ones"
        )
    config = _config_for(args)
    model = default_model()
    if args.calibration:
        from device.calibration.session import flat_from_frames

        flat = flat_from_frames(Path(args.calibration), config)
    else:
        flat = sim_flat_field(config)
    kinds = (BONA_FIDE, *ATTACKS)

    def progress(i: int, n: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{i}/{n} presentations", end="", file=sys.stderr, flush=True)

    found = collect(config, kinds, seeds, flat, model, jobs=args.jobs, progress=progress)
    if not args.json and sys.stderr.isatty():
        print(file=sys.stderr)
    r = rates(found, threshold=model.threshold, samples=args.samples, seed=args.seed)
    notes = rig_notes(flat, found)
    if args.plot:
        from device.det_plot import det_image

        bona = [score_of(p) for p in found if p.kind == BONA_FIDE and p.verdict.quality.ok]
        attacks = {k: [score_of(p) for p in found if p.kind == k] for k in ATTACKS}
        _write_png(
            args.plot,
            det_image(
                bona, attacks, model.threshold, f"DET, {args.samples} per class, seeds from {args.seed}"
            ),
        )
    if args.json:
        for warning in notes.warnings:  # a person running it for figures must see these too
            print(f"palm eval: WARNING: {warning}", file=sys.stderr)
        print(json.dumps({**r.as_json(), "rig": notes.as_json()}))
        return 0
    print(
        f"palm eval: {args.samples} presentations per class on the simulated scanner, seeds "
        f"{seeds.start}..{seeds.stop - 1}, liveness threshold {model.threshold:.4f}"
    )
    for line in notes.lines():
        print(f"  {line}")
    for line in r.lines():
        print(f"  {line}")
    print(
        "  BPCER: bona fide captures that passed quality but were judged attacks; APCER: attacks judged "
        'live, whatever their quality; try again: left at "can\'t tell" (a cue unlike any palm the '
        "model has seen, in no attack's direction), counted apart from both."
    )
    if args.plot:
        print(f"  DET curves: {args.plot}")
    return 0


def _calibrate_liveness(args: argparse.Namespace) -> int:
    """`palm calibrate liveness`: the rig's own liveness fit from its labelled bursts."""
    import json

    from device.calibration import report
    from device.calibration import session as ses
    from device.calibration.frames import read as read_frames
    from device.calibration.steps import Outcome
    from device.checkfiles import UnreadableError, read_labelled
    from device.vision import rigfit
    from device.vision.fitting import BONA_FIDE
    from device.vision.liveness import default_model

    if not (args.calibration and args.bursts and args.file):
        raise UsageError(
            "palm calibrate liveness needs --calibration DIR (the rig's calibration frames), --bursts BDIR "
            "(live/NAME/ and attack/KIND/NAME/ bursts taken on it) and --out FILE (the model to write)"
        )
    if args.report:
        ses.report_path_ok(Path(args.report))
    config = _config_for(args)
    given = read_frames(Path(args.calibration))
    session = ses.from_given(given, str(args.calibration), config, None)
    flat = ses.flat_from_given(given, str(args.calibration), config)
    shipped = default_model()
    try:
        rows, problems = read_labelled(Path(args.bursts), config, flat, shipped)
    except UnreadableError as exc:
        raise UsageError(str(exc)) from None
    live = [r for r in rows if r.kind == BONA_FIDE]
    kinds = sorted({r.kind for r in rows} - {BONA_FIDE})
    print(f"palm calibrate liveness: {args.bursts} on the rig of {args.calibration}")
    print(
        f"  bursts: {len(live)} live ({sum(r.quality_ok for r in live)} pass quality), "
        + ", ".join(f"{sum(r.kind == k for r in rows)} {k}" for k in kinds)
    )
    for line in problems:
        print(f"  not used: {line}")
    before = rigfit.judge(shipped, rows)
    print("  the shipped model on these bursts:")
    for line in before.lines():
        print(f"  {line}")
    model, cv = rigfit.fit_rig(
        shipped,
        rows,
        fitted_for={
            "calibration": str(args.calibration),
            "bursts": str(args.bursts),
            "live": len(live),
            "attacks": {k: sum(r.kind == k for r in rows) for k in kinds},
        },
    )
    lines = ["the rig's fit, cross-validated (each burst judged by a fit that did not see it):"]
    lines += cv.lines()
    lines.append(f"threshold {model.threshold:.4f}, logit x {model.logit_scale:.3f} {model.logit_shift:+.3f}")
    for line in lines:
        print(f"  {line}")
    try:
        Path(args.file).write_text(json.dumps(model.as_json(), indent=2) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {args.file}: {exc.strerror}") from None
    print(
        f"  wrote {args.file}: use it with `palm check --liveness {args.file}` or [calibration] liveness_file"
    )
    if args.report:
        outcome = Outcome("liveness", True, ["the shipped model on these bursts:", *before.lines(), *lines])
        page = report.render(
            session.calibration,
            [*session.outcomes, outcome],
            saved_to=str(args.file),
            title=f"Liveness fit for the rig of {args.calibration}",
        )
        try:
            Path(args.report).write_text(page)
        except OSError as exc:
            raise OutputError(f"cannot write {args.report}: {exc.strerror}") from None
        print(f"  report: {args.report}")
    return 0


def _crops_out(folder: str | None, paths: list[str]) -> dict[Path, Path]:
    """Where `palm check --crops-out` writes each input's crop: DIR/<name without extension>.png.
    Two inputs of one name would overwrite each other: refused before anything is judged."""
    if folder is None:
        return {}
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make --crops-out {out}: {exc.strerror}") from None
    where: dict[Path, Path] = {}
    for p in map(Path, paths):
        target = out / f"{p.stem}.png"
        clash = next((q for q, t in where.items() if t == target), None)
        if clash is not None:
            raise UsageError(
                f"--crops-out: {clash} and {p} would both be written to {target}: give inputs of "
                "different names"
            )
        where[p] = target
    return where


def cmd_check(args: argparse.Namespace) -> int:
    import json

    from device.checkfiles import check_labelled, check_path, is_labelled
    from device.vision.rigfit import judge

    config = _config_for(args)
    flat = None
    if args.calibration:
        from device.calibration.session import flat_from_frames

        flat = flat_from_frames(Path(args.calibration), config)
    from device.vision.liveness import load_model

    model = load_model(args.liveness or config.calibration.liveness_file)
    crops = _crops_out(args.crops_out, args.paths)
    unreadable = []
    for path in map(Path, args.paths):
        if not is_labelled(path):
            line = check_path(path, config, flat, model, crops.get(path))
            print(json.dumps(line), flush=True)
            if "error" in line:
                unreadable.append(line["path"])
            continue
        rows, unjudged = [], 0
        for line, row in check_labelled(path, config, flat, model):
            print(json.dumps(line), flush=True)
            if "error" in line:
                unreadable.append(line["path"])
            if row is None:
                unjudged += 1
            else:
                rows.append(row)
        # the summary goes to standard error: standard output stays one JSON line per burst
        summary = [f"palm check: {path}, {len(rows) + unjudged} labelled bursts (ISO/IEC 30107-3)"]
        summary += judge(model, rows).lines()
        if unjudged:
            summary.append(f"  bursts with no liveness verdict (unreadable, or no hand found): {unjudged}")
        print("\n".join(summary), file=sys.stderr)
    if unreadable:  # every other input was judged; the exit says not all were
        print(
            f"palm check: {len(unreadable)} input(s) could not be read, first {unreadable[0]}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from device.bench import run_bench

    result = run_bench(_config_for(args), runs=args.runs)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"palm bench: {args.runs} bursts rendered by the simulator, timed stage by stage on this machine")
    for name, s in result["stages"].items():
        print(f"  {name:24s} median {s['median_ms']:7.2f} ms   p95 {s['p95_ms']:7.2f} ms")
    print(
        f"  whole burst's checks: median {result['burst_median_ms']:.2f} ms, "
        f"{result['burst_fraction_of_capture'] * 100:.1f} % of the burst's own capture time "
        f"({result['capture_ms']:.0f} ms at {result['frame_rate']:g} fps)"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from device.calibration import calfile as cf
    from device.calibration import report
    from device.calibration import session as ses
    from device.calibration import steps as S

    if args.step == "from-frames":
        return _calibrate_from_frames(args)
    if args.step == "liveness":
        return _calibrate_liveness(args)
    if args.calibration or args.bursts:
        raise UsageError("--calibration and --bursts go with `palm calibrate liveness`")
    if args.frames:
        raise UsageError(f"a folder of frames goes with from-frames, not {args.step}")
    if args.save_frames and (args.step != "flat" or not args.simulate):
        raise UsageError(
            "--save-frames goes with `palm calibrate flat --simulate` (the simulator's optics are known)"
        )
    if args.simulate:
        for fault in args.fault:
            name, _, arg = fault.partition(":")
            needs_k = name in ("dead-sector", "weak-sector")
            n = len(_config_for(args).leds.sector_pins)
            if (
                name not in ses.SIM_FAULTS
                or needs_k != bool(arg)
                or (needs_k and not (arg.isdigit() and int(arg) < n))
            ):
                raise UsageError(
                    f"--fault {fault!r}: valid are {', '.join(ses.SIM_FAULTS)} "
                    f"(dead-sector and weak-sector as NAME:K, K a sector from 0 to {n - 1})"
                )
        config = _config_for(args)
    else:
        if args.fault:
            raise UsageError("--fault is for the simulated scanner: add --simulate")
        if not args.config:
            raise UsageError("the scanner's config is needed: --config FILE (or --simulate)")
        config = load_config(args.config)
    path = (
        Path(args.file)
        if args.file
        else (None if args.simulate and not args.config else config.calibration.file)
    )
    if args.report:
        ses.report_path_ok(Path(args.report))
    previous = None
    if path is not None and path.exists():
        try:
            previous = cf.load(path)
        except cf.CalibrationError as e:
            if args.step == "verify":
                raise
            print(f"palm calibrate: {e}; starting afresh", file=sys.stderr)
    elif args.step == "verify":
        raise cf.CalibrationError(
            f"no calibration to verify{f' at {path}' if path else ''}: run `palm calibrate all`"
            + (" --simulate --file FILE first" if args.simulate else " first")
        )
    console = ses.Console(sys.stdout, wait=None if args.simulate or args.yes else ses.press_enter)
    opened = (
        ses.sim_station(config, args.fault, console) if args.simulate else ses.real_station(config, console)
    )
    where = "the simulated scanner" if args.simulate else config.device.id
    print(
        f"palm calibrate {args.step} on {where}"
        + (f" (faults: {', '.join(args.fault)})" if args.fault else "")
    )
    with opened as station:
        if args.step == "verify":
            assert previous is not None
            found: list[S.Outcome] = []

            def said(o: S.Outcome) -> None:
                found.append(o)
                for line in o.lines:
                    console.say(f"  {line}")
                console.say(f"{o.step}: {'as calibrated' if o.ok else 'DRIFTED'}")

            try:
                S.verify(station, config, previous, said)
            except S.StepFailed as e:
                raise UsageError(str(e)) from None
            ok = all(o.ok for o in found)
            print(f"verify: {'within tolerances of ' + previous.id if ok else 'drifted: calibrate again'}")
            if args.report:
                _write_text(
                    args.report, report.render(previous, found, saved_to=str(path), title="Calibration check")
                )
                print(f"wrote the report {args.report}")
            return 0 if ok else 1
        result = ses.calibrate(
            args.step,
            station,
            config,
            previous,
            save_frames=Path(args.save_frames) if args.save_frames else None,
        )
    return _finish_calibration(result, previous, path, args)


def _calibrate_from_frames(args: argparse.Namespace) -> int:
    from device.calibration import session as ses

    if not args.frames:
        raise UsageError("from-frames needs the folder: palm calibrate from-frames DIR --file FILE")
    if args.simulate or args.fault or args.save_frames:
        raise UsageError("from-frames reads a folder: no --simulate, --fault or --save-frames")
    config = _config_for(args)
    path = Path(args.file) if args.file else (config.calibration.file if args.config else None)
    if path is None:
        raise UsageError("--file FILE: where to write the calibration made from the frames")
    if args.report:
        ses.report_path_ok(Path(args.report))
    print(f"palm calibrate from-frames {args.frames}")
    result = ses.from_frames(Path(args.frames), config, None)
    for o in result.outcomes:
        for line in o.lines:
            print(f"  {line}")
        print(f"{o.step}: {'passed' if o.ok else 'FAILED'}")
    return _finish_calibration(result, None, path, args)


def _finish_calibration(result: Any, previous: Any, path: Path | None, args: argparse.Namespace) -> int:
    """Save what passed, write the report, and say what is left."""
    from device.calibration import calfile as cf
    from device.calibration import report

    saved = None
    if path is not None and result.calibration is not previous and any(o.ok for o in result.outcomes):
        cf.save(result.calibration, path)
        saved = str(path)
        print(f"wrote {path} (calibration {result.calibration.id})")
    elif path is None:
        print("calibration kept in memory only: give --file FILE to keep it")
    if args.report:
        text = report.render(result.calibration, result.outcomes, saved_to=saved, title="Scanner calibration")
        _write_text(args.report, text)
        print(f"wrote the report {args.report}")
    failed = [o.step for o in result.outcomes if not o.ok]
    missing = result.calibration.missing()
    if failed:
        print(f"calibrate: {failed[0]} failed; fix what it says and run `palm calibrate {failed[0]}` again")
    elif missing:
        print(f"calibrate: passed; still to do: {', '.join(missing)}")
    else:
        print("calibrate: every step passed")
    return 1 if failed else 0


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write {path!r}: {exc.strerror}") from None


def cmd_leds_off(args: argparse.Namespace) -> int:
    from device.hardware.gpio import real_pin_factory
    from device.hardware.ring import force_dark

    config = load_config(args.config)
    factory = real_pin_factory(config.leds.pin_factory)
    try:
        force_dark(pins=config.leds.sector_pins, pin_factory=factory, active_high=config.leds.active_high)
    finally:
        factory.close()
    pins = ", ".join(map(str, config.leds.sector_pins))
    level = "low" if config.leds.active_high else "high"
    print(f"LED ring dark: BCM pins {pins} driven {level}, then released (the gate pull-downs hold it)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.simulate:
        return _run_on_hardware(args)
    from device.daemon import logs
    from device.daemon.simulate import Options, run_simulated

    logs.setup(sys.stderr, as_json=args.json)
    config = _config_for(args)
    fault_at, fault_for = None, 3.0
    if args.camera_fault:
        fault_at, fault_for = _fault_spec(args.camera_fault)
    if args.till_port is not None and not 0 <= args.till_port <= 65535:
        raise UsageError(f"--till-port {args.till_port} is not valid: a port from 0 (any free one) to 65535")
    if args.walk_ins and args.till_port is None:
        raise UsageError("--walk-ins goes with --till-port (without a till every shopper walks in)")
    reload = (lambda: load_config(args.config)) if args.config else None
    summary = run_simulated(
        config,
        Options(
            scans=10 if args.scans is None else args.scans,
            seed=args.seed,
            as_json=args.json,
            endpoint=args.endpoint,
            status_port=args.status_port,
            camera_fault_at_s=fault_at,
            camera_fault_for_s=fault_for,
            reload=reload,
            till_port=args.till_port,
            walk_ins=args.walk_ins,
        ),
    )
    # stopped by a signal: a clean stop; a till's run: its checkouts ended (timed out, it may be)
    return 0 if summary.count or summary.stopped_by or summary.checkouts else 1


def _run_on_hardware(args: argparse.Namespace) -> int:
    from device.daemon import logs
    from device.daemon.hardware import Options, run_on_hardware

    for flag, given in (
        ("--endpoint", args.endpoint),
        ("--camera-fault", args.camera_fault),
        ("--till-port", args.till_port is not None),
        ("--walk-ins", args.walk_ins),
    ):
        if given:
            raise UsageError(
                f"{flag} is for the simulated scanner: add --simulate ([cloud] endpoint sets the ingest)"
            )
    if not args.config:
        raise UsageError("the scanner's config is needed: --config FILE (or --simulate)")
    logs.setup(sys.stdout, as_json=True)  # journald keeps stdout; one JSON object per line
    config = load_config(args.config)
    summary = run_on_hardware(
        config,
        Options(scans=args.scans, status_port=args.status_port, reload=lambda: load_config(args.config)),
    )
    return 0 if summary.count or args.scans is None else 1


def _fault_spec(text: str) -> tuple[float, float]:
    try:
        at, _, length = text.partition(":")
        spec = (float(at), float(length) if length else 3.0)
    except ValueError:
        spec = (-1.0, -1.0)
    if spec[0] < 0 or spec[1] <= 0:
        raise UsageError(
            f"--camera-fault {text!r} is not valid: give AT or AT:FOR in seconds of scene time, "
            "such as 20 or 20:5"
        )
    return spec


def build_parser() -> argparse.ArgumentParser:
    from device.sim.scene import SCENE_KINDS

    parser = argparse.ArgumentParser(
        prog="palm",
        description="Open firmware for NIR palm scanners: run the scanner, simulate it, "
        "manage its keys, check and evaluate captures, calibrate it.",
    )
    parser.add_argument("--version", action="version", version=f"palm-scanner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser(
        "sim",
        help="render frames of the simulated scanner to PNG files",
        description="Render what the simulated scanner's camera sees, through the real LED ring "
        "driver on mock pins, for a person to look at. The output is synthetic, not biometric.",
    )
    sim.add_argument("--scene", default="genuine", choices=SCENE_KINDS, help="what is held over the scanner")
    sim.add_argument("--seed", type=int, default=1, help="scene seed: the same seed, the same scene")
    sim.add_argument(
        "--identity",
        type=int,
        metavar="I",
        help="whose palm (a genuine scene): the same identity is the same palm, the seed only says how "
        "it is presented (pose, distance, spread, light, noise); default: a palm of the seed's own",
    )
    sim.add_argument(
        "--pattern", default="flood", help="LED pattern: ambient, flood or sector-K (default flood)"
    )
    sim.add_argument("--out", metavar="FILE.png", help="write one frame here")
    sim.add_argument(
        "--contact-sheet", metavar="FILE.png", help="write every scene under every pattern here instead"
    )
    sim.add_argument(
        "--condition",
        choices=("dark", "shop", "bright", "sunlit"),
        default="shop",
        help="ambient NIR light (default shop)",
    )
    sim.add_argument("--distance-mm", type=float, default=None, help="hold the object this far away")
    sim.add_argument("--motion", choices=("still", "hover", "approach", "fast"), default="hover")
    sim.add_argument("--exposure-us", type=int, default=3000, help="exposure (default 3000)")
    sim.add_argument("--gain", type=float, default=2.0, help="analogue gain (default 2.0)")
    sim.add_argument("--config", metavar="FILE", help="take camera, ring and optics from this config")
    sim.set_defaults(handler=cmd_sim)

    keys = sub.add_parser(
        "keys",
        help="create and show the device key and a development recipient key",
        description="Keys are PKCS#8 PEM files, created with mode 0600 and never overwritten.",
    )
    ksub = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    k_init = ksub.add_parser(
        "init",
        help="create this scanner's Ed25519 device key",
        description="Create the device's Ed25519 signing key and print its public key "
        "and the line to register it with the cloud.",
    )
    k_init.add_argument(
        "--out", required=True, metavar="PATH", help="where to write the key (must not exist)"
    )
    k_init.add_argument(
        "--device-id", default="DEVICE-ID", help="the device id to print in the register line"
    )
    k_show = ksub.add_parser(
        "show",
        help="print a key's public half (and a recipient key's suite and kid)",
        description="Print the public half of a device key, or the suite, kid and public half of a "
        "recipient key (its private file or its PATH.pub).",
    )
    k_show.add_argument("path", metavar="PATH")
    k_rec = ksub.add_parser(
        "recipient",
        help="create a recipient key pair for a development cloud (X-Wing by default)",
        description="Write the private half (for palm ingest) to PATH and the public half "
        "(base64, for the scanner config) to PATH.pub.",
    )
    k_rec.add_argument("--out", required=True, metavar="PATH")
    k_rec.add_argument(
        "--suite",
        choices=("xwing", "x25519"),
        default="xwing",
        help="xwing (ML-KEM-768 + X25519, protocol 2's post-quantum default) or x25519 (protocol 1)",
    )
    keys.set_defaults(handler=cmd_keys)

    till = sub.add_parser(
        "till",
        help="the tills allowed to arm this scanner: add, list, remove",
        description="Each till has its own bearer token for the till API, printed once by add (only its "
        "SHA-256 is kept, in STATE_DIR/tills.json, mode 0600), with the SHA-256 fingerprint of the "
        "scanner's own TLS certificate (made once, ECDSA P-256) that the till pins.",
    )
    till.add_argument("action", choices=("add", "list", "remove"))
    till.add_argument("name", nargs="?", metavar="NAME", help="the till's name: 1 to 64 of [A-Za-z0-9._-]")
    till.add_argument(
        "--state-dir",
        default="/var/lib/palm-scanner",
        metavar="DIR",
        help="where tills.json and the TLS key live",
    )
    till.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="an address or name the certificate is for, when it is made (repeatable; default 127.0.0.1)",
    )
    till.add_argument(
        "--json", action="store_true", help="add: one JSON line {till, token, fingerprint_sha256}"
    )
    till.set_defaults(handler=cmd_till)

    st = sub.add_parser(
        "send-test",
        help="seal a synthetic capture and send it to the configured cloud",
        description="The installer's check: seals a synthetic capture from the simulator "
        "(marked as a test) with this scanner's keys and sends it to the configured endpoint. "
        "Prints the outcome in one line; exits 0 only on HTTP 201 or 200.",
    )
    st.add_argument("--config", required=True, metavar="FILE")
    st.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to keep retrying a cloud that is busy or unreachable (default 30, 1 to 120)",
    )
    st.set_defaults(handler=cmd_send_test)

    se = sub.add_parser(
        "selftest",
        help="check that this scanner is ready: config, key, camera, LEDs, clock, swap, cloud",
        description="Checks, in order, and says what failed in one line each (and what to do): "
        "config, device key and its permissions, camera frames arriving, every LED sector "
        "responding (hold the grey card about 12 cm above the window), indicator, calibration, "
        "clock synchronised, swap off, cloud reachable (a test capture). Exits 1 if any failed.",
    )
    se.add_argument("--config", metavar="FILE", help="the scanner's config (with --simulate: optional)")
    se.add_argument("--simulate", action="store_true", help="check the simulated scanner")
    se.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME",
        help="simulated scanner: break something the self-test must catch (camera-gone, "
        "dead-sector:K, clock-unsynced, swap-on, cloud-down); repeatable",
    )
    se.set_defaults(handler=cmd_selftest)

    ing = sub.add_parser(
        "ingest",
        help="the reference ingest service, for development and tests",
        description="For development and tests only, not for production: serves POST "
        "/v1/captures as protocol v1's receiver order of checks says, keeps nothing on disk and "
        "prints one JSON line per request (capture id, device, roles, frame sizes, status; "
        "never pixels). Stops on Ctrl-C or SIGTERM.",
    )
    ing.add_argument("--host", default="127.0.0.1")
    ing.add_argument("--port", type=int, default=8080)
    ing.add_argument(
        "--recipient-key",
        action="append",
        required=True,
        metavar="PATH",
        help="X25519 private key (PKCS#8 PEM); repeatable",
    )
    ing.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID=PUBKEY",
        help="a registered device and its base64 Ed25519 public key; repeatable",
    )
    ing.add_argument(
        "--busy-first",
        type=int,
        default=0,
        metavar="K",
        help="answer 503 busy with Retry-After to the first K requests",
    )
    ing.add_argument(
        "--retry-after", type=int, default=1, metavar="S", help="Retry-After seconds (default 1)"
    )
    ing.add_argument(
        "--slow-first", type=int, default=0, metavar="K", help="be slow for the first K requests"
    )
    ing.add_argument("--slow-s", type=float, default=2.0, metavar="S", help="how slow (default 2 s)")
    ing.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    ing.add_argument("--tls-key", metavar="PEM", help="and this private key")
    ing.add_argument(
        "--enrol",
        metavar="LABEL,LABEL,...",
        help="the subject label of each capture in the order they arrive: the first of a label is "
        "enrolled, later ones (and captures past the list) are identified by the reference matcher; "
        "each answer's result carries the decision and score. Templates live in memory only",
    )
    ing.add_argument(
        "--fmr",
        type=float,
        metavar="RATE",
        help="with --enrol: the false-match rate the threshold is set for (0.01 or 0.001, the default)",
    )
    ing.set_defaults(handler=cmd_ingest)

    ev = sub.add_parser(
        "eval",
        help="measure BPCER and APCER on fresh simulated scenes",
        description="Render N bona fide presentations and N of each attack type in fresh "
        "simulated scenes, run the real pipeline (metering, bursts, quality, liveness) and print "
        "BPCER, APCER per attack type and the bona fide quality rejection rate at the operating "
        "threshold, as ISO/IEC 30107-3 reports them.",
    )
    ev.add_argument(
        "--samples", type=int, default=100, metavar="N", help="presentations per class (default 100)"
    )
    ev.add_argument("--seed", type=int, default=1, metavar="S", help="first seed (default 1)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument("--plot", metavar="FILE.png", help="draw the DET curves here")
    ev.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    ev.add_argument("--config", metavar="FILE", help="take camera, ring and optics from this config")
    ev.add_argument(
        "--calibration",
        metavar="DIR",
        help="judge with the flat fields, ring and scale of this folder of calibration frames (see "
        "`palm calibrate from-frames --help`); default: the simulated scanner's own frames",
    )
    ev.add_argument(
        "--real",
        metavar="DIR",
        help="instead: utility of the scanner's crops of a folder of labelled real palm images "
        "(SUBJECT_HAND_N, as CASIA's 001_l_940_04.jpg) by the reference matcher: mated and non-mated "
        "scores, EER, FNMR at FMR 1 %% and 0.1 %%, the error-versus-reject curve of the quality score",
    )
    ev.add_argument(
        "--identities",
        type=int,
        metavar="N",
        help="instead: utility on N simulated palms (identities from --seed on), each presented "
        "--presentations times through the real pipeline",
    )
    ev.add_argument("--presentations", type=int, default=4, metavar="K", help="with --identities (default 4)")
    ev.add_argument(
        "--session",
        type=int,
        default=3,
        metavar="K",
        help="with --real: shots 1..K are one session, the next K another (default 3, as CASIA's)",
    )
    ev.set_defaults(handler=cmd_eval)

    ck = sub.add_parser(
        "check",
        help="judge image files or bursts: quality, liveness, reasons",
        description="Judge image files a person hands over: a single frame (from any scanner) "
        "gets the quality measures; a burst (a folder or .tar laid out as the protocol's plaintext: "
        "manifest.json and one PNG per LED pattern) gets liveness too. One JSON line per input; an "
        "unreadable input gets a line with 'error', the rest go on, and the exit is 1. A folder of a "
        "rig's labelled bursts (live/NAME/, attack/KIND/NAME/) gets a line per burst with its label, "
        "and BPCER and APCER per kind with 95 % intervals on standard error.",
    )
    ck.add_argument("paths", nargs="+", metavar="PATH")
    ck.add_argument("--config", metavar="FILE", help="the scanner's config (its optics, for bursts)")
    ck.add_argument(
        "--liveness",
        metavar="FILE",
        help="judge liveness with this rig's model (from `palm calibrate liveness`; default: the config's "
        "[calibration] liveness_file, else the shipped model)",
    )
    ck.add_argument(
        "--calibration",
        metavar="DIR",
        help="judge bursts against this calibration folder (manifest.json, dark.png, card-*.png: "
        "see `palm calibrate from-frames`) instead of the simulated scanner's",
    )
    ck.add_argument(
        "--crops-out",
        metavar="DIR",
        help="also write the crop the scanner would seal of each input (a burst's flood frame) as "
        "DIR/<input name without extension>.png, for an outside matcher; each line names it ('crop')",
    )
    ck.set_defaults(handler=cmd_check)

    be = sub.add_parser(
        "bench",
        help="time each stage of the checks on rendered frames",
        description="Time presence, segmentation and crop, quality, liveness and the whole burst "
        "on frames rendered by the simulator: median and 95th percentile per stage, and the burst "
        "total as a fraction of the burst's own capture time.",
    )
    be.add_argument("--runs", type=int, default=50)
    be.add_argument("--json", action="store_true")
    be.add_argument("--config", metavar="FILE")
    be.set_defaults(handler=cmd_bench)

    run = sub.add_parser(
        "run",
        help="serve shoppers: the scanner daemon (--simulate: on the simulated scanner)",
        description="The scanner's main job. On the scanner (--config FILE, as palmd.service runs it) it "
        "drives the camera, LED ring and indicator, judges bursts against the calibration file and "
        "uploads sealed captures, logging JSON lines on stdout. With --simulate it runs on the "
        "simulated scanner with a scenario of shoppers and attacks, keys made in memory and the "
        "reference ingest on 127.0.0.1, printing one line per event and a summary. SIGTERM stops it "
        "cleanly, SIGHUP re-reads --config.",
    )
    run.add_argument("--simulate", action="store_true", help="run on the simulated scanner")
    run.add_argument(
        "--scans", type=int, metavar="N", help="stop after N scans (default: 10 with --simulate, else never)"
    )
    run.add_argument("--seed", type=int, default=1, help="scenario seed")
    run.add_argument("--json", action="store_true", help="JSON lines; the summary is the last line")
    run.add_argument(
        "--endpoint",
        metavar="URL",
        help="send to this ingest instead of one in this process "
        "(needs --config with the device key and the recipient key)",
    )
    run.add_argument("--config", metavar="FILE", help="config file (SIGHUP reads it again)")
    run.add_argument(
        "--status-port",
        type=int,
        metavar="PORT",
        help="serve /healthz and /metrics on 127.0.0.1:PORT (0: any free port, logged)",
    )
    run.add_argument(
        "--camera-fault",
        metavar="AT[:FOR]",
        help="simulated scanner: the camera stops delivering AT seconds into the scenario, for FOR "
        "seconds (default 3)",
    )
    run.add_argument(
        "--till-port",
        type=int,
        metavar="PORT",
        help="simulated scanner: serve the till API on https://127.0.0.1:PORT (0: any free port) with a "
        "till of its own, printed first (with --json: a till_ready line with port, token and "
        "fingerprint_sha256); nobody is captured unless the till arms a checkout, and each arming "
        "brings the next shopper; the run ends after --scans checkouts have ended",
    )
    run.add_argument(
        "--walk-ins",
        action="store_true",
        help="with --till-port: shoppers also arrive on their own (still captured only when armed)",
    )
    run.set_defaults(handler=cmd_run)

    off = sub.add_parser(
        "leds-off",
        help="drive the LED ring dark (palmd.service runs it after the daemon, however it ended)",
        description="Claims every LED ring pin, drives it dark and releases it. A Raspberry Pi keeps "
        "a released output at its last level, so a daemon killed mid-flash (watchdog, out of "
        "memory) would leave the ring lit: the unit runs this as ExecStopPost=.",
    )
    off.add_argument("--config", required=True, metavar="FILE")
    off.set_defaults(handler=cmd_leds_off)

    from device.calibration.session import CHOICES, SIM_FAULTS

    cal = sub.add_parser(
        "calibrate",
        help="calibrate the scanner with the lens cap, a grey card and the focus target",
        description="Guides the technician step by step and writes the calibration file (figures and "
        "tables, no images). Steps: dark (lens covered), flat (nothing in front, then the grey card: "
        "flat fields, dead, weak or miswired sectors, a smudged window), exposure (the palm's exposure "
        "within the eye-safety limit), focus and scale (the focus target); all runs them in order; "
        "verify re-checks a calibrated scanner and exits 1 if it drifted.",
    )
    cal.add_argument("step", choices=(*CHOICES, "liveness"))
    cal.add_argument("frames", nargs="?", metavar="DIR", help="from-frames: the folder of calibration frames")
    cal.add_argument("--config", metavar="FILE", help="the scanner's config (with --simulate: optional)")
    cal.add_argument(
        "--file",
        "--out",
        dest="file",
        metavar="FILE",
        help="the calibration file to write, update or verify (default: [calibration] file)",
    )
    cal.add_argument("--report", metavar="FILE.html", help="write the technician's report here")
    cal.add_argument(
        "--calibration",
        metavar="DIR",
        help="liveness: the rig's calibration frames (as from-frames reads them)",
    )
    cal.add_argument(
        "--bursts", metavar="BDIR", help="liveness: live/NAME/ and attack/KIND/NAME/ bursts taken on the rig"
    )
    cal.add_argument(
        "--save-frames",
        metavar="DIR",
        help="flat --simulate: also write the grey-card frames as a calibration folder (for from-frames)",
    )
    cal.add_argument("--simulate", action="store_true", help="calibrate the simulated scanner")
    cal.add_argument("--yes", action="store_true", help="do not wait for Enter after each instruction")
    cal.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME",
        help="simulated scanner: break something a step must catch: "
        + ", ".join(f"{k} ({v})" for k, v in SIM_FAULTS.items())
        + "; dead-sector and weak-sector as NAME:K; repeatable",
    )
    cal.set_defaults(handler=cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ScannerError as exc:
        print(f"palm {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
