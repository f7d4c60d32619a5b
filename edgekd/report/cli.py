"""``edgekd report RUN``: profile when asked (or when the run has none yet), then render."""

from __future__ import annotations

from pathlib import Path

from edgekd.rundir import RunDir


def report_command(run_path: Path, profile: bool = False, fid_samples: int | None = None, repeats: int | None = None,
                   inception: str | None = None) -> int:
    from edgekd.report.render import render_report

    run = RunDir.open(run_path)
    if profile or not (run.report_dir / "profile.json").is_file():
        from edgekd.profile.run import profile_run

        print(f"profiling {run.path} first (report/profile.json is what the report shows)")
        profile_run(run.path, fid_samples=fid_samples, repeats=repeats, inception=inception)
    html_path, md_path = render_report(run.path)
    print(f"report: {html_path} (self-contained; open it in a browser) and {md_path}")
    return 0
