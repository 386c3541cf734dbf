"""The one frame loader: frames by point number, clear errors naming broken files."""

import h5py
import numpy as np
import pytest

from acquisition.storage.frames import DerivedImageHandler, FrameReadError, HDF5FrameHandler


def write_frames(path, count=3):
    frames = np.arange(count * 4 * 5, dtype=np.uint16).reshape(count, 4, 5)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames)
    return frames


def test_frames_by_point_number(tmp_path):
    frames = write_frames(tmp_path / "frames.h5")
    handler = HDF5FrameHandler(str(tmp_path / "frames.h5"))
    assert np.array_equal(handler(2), frames[2])
    with pytest.raises(FrameReadError, match="frame 3 requested but the file holds 3 frames"):
        handler(3)


def test_frames_are_readable_while_the_writer_appends(tmp_path):
    path = tmp_path / "live.h5"
    writer = h5py.File(path, "w", libver="latest")
    data = writer.create_dataset("entry/data/data", shape=(0, 4, 5), maxshape=(None, 4, 5),
                                 dtype="<u2", chunks=(1, 4, 5))
    writer.swmr_mode = True
    try:
        data.resize(1, axis=0)
        data[0] = 7
        data.flush()
        handler = HDF5FrameHandler(str(path))
        assert handler(0).sum() == 7 * 20
        data.resize(2, axis=0)
        data[1] = 9
        data.flush()
        assert handler(1).sum() == 9 * 20
    finally:
        writer.close()


def test_broken_files_are_named(tmp_path):
    good = tmp_path / "good.h5"
    write_frames(good, count=50)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(FrameReadError, match="truncated.h5: not a complete HDF5 file"):
        HDF5FrameHandler(str(truncated))
    with pytest.raises(FrameReadError, match="missing.h5: no such file"):
        HDF5FrameHandler(str(tmp_path / "missing.h5"))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["entry/x"] = 1
    with pytest.raises(FrameReadError, match="other.h5: no dataset /entry/data/data"):
        HDF5FrameHandler(str(other))
    with pytest.raises(FrameReadError, match="other.h5: no derived image 'dark_field'"):
        DerivedImageHandler(str(other))("dark_field")


def test_bitshuffle_lz4_files_read_in_a_fresh_process(tmp_path):
    """A bslz4 frame file (the detector's Compression choice) reads with nothing but the
    loader imported: h5py alone does not know filter 32008."""
    import subprocess
    import sys

    from simulators.shared.frame_file import append_frame, close_frame_file, create_frame_file

    path = tmp_path / "bslz4.h5"
    file, dataset = create_frame_file(str(path), (4, 5), compression="bslz4")
    append_frame(dataset, np.arange(20, dtype=np.uint16).reshape(4, 5))
    close_frame_file(file)
    read = ("from acquisition.storage.frames import HDF5FrameHandler\n"
            f"h = HDF5FrameHandler({str(path)!r}); print(int(h(0).sum())); h.close()")
    result = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sum(range(20)))


def test_a_file_being_written_shows_each_frame_with_its_ndattributes(tmp_path):
    """SWMR: a reader in another process that sees N frames finds N values of every
    NDAttribute (the writer flushes them before the frame)."""
    import subprocess
    import sys

    from simulators.shared.frame_file import append_frame, close_frame_file, create_frame_file

    path = tmp_path / "growing_000000.h5"
    file, dataset = create_frame_file(str(path), (4, 5), compression="zlib")
    read = ("import h5py\n"
            f"with h5py.File({str(path)!r}, 'r', swmr=True) as f:\n"
            "    group = f['entry/instrument/NDAttributes']\n"
            "    print(len(f['entry/data/data']), sorted({len(group[k]) for k in group}),"
            " group['NDArrayUniqueId'][()].tolist())")
    try:
        for k in range(3):
            append_frame(dataset, np.full((4, 5), k, np.uint16), unique_id=10 + k)
            done = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout.split(" ", 1) == [str(k + 1), f"[{k + 1}] {list(range(10, 11 + k))}\n"]
    finally:
        close_frame_file(file)
