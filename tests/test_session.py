"""`talbot-lau session --sim`: IPython with the instrument, magics and plans, run as a user would."""

import os
import subprocess
import sys


def test_session_runs_a_plan_through_ipython_and_the_magics(tmp_path):
    lines = "\n".join([
        "%mov g2 1.6",
        "%wa",
        "RE.md['operator'] = 'tester'",
        "RE(darkfield_projection(instrument, steps=3, dark_frames=1, exposure_s=1.0, sample='s-1'))",
        "print('SHUTTER', tube.shutter.get(), 'RUNS', RE.md['scan_id'])",
        "print('FLUSHED', flush())",  # recorder, catalogue and processor caught up
        "print('CATALOGUED', len(find_runs(catalogue, 's-1')), len(find_runs(catalogue, 's-1', derived=True)))",
    ])
    env = dict(os.environ, TALBOT_LAU_STATE=str(tmp_path / "state"))
    command = [sys.executable, "-m", "acquisition.cli", "session", "--sim", "--out",
               str(tmp_path / "data"), "-c", lines]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "talbot-lau session: simulated instrument" in out  # the help screen
    assert "g2                             1.6" in out  # %wa after %mov
    assert "SHUTTER 0 RUNS 1" in out
    assert "FLUSHED True" in out
    assert "CATALOGUED 1 1" in out  # the raw run and the processor's derived run
    assert list((tmp_path / "data").glob("run_*.nxs")) and list((tmp_path / "data" / "raw").glob("*.h5"))
    # metadata persists into the next session
    # the exit keeps its own references: names deleted in IPython do not break it
    again = subprocess.run(command[:-1] + ["print('OPERATOR', RE.md['operator']); "
                                           "del processor, catalogue, session, flush"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert "OPERATOR tester" in again.stdout
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
