"""A corrupted frame fails to read, naming the file, instead of classifying wrongly: both
twins write frames with the HDF5 Fletcher32 checksum (simulators/shared/frame_file.py)."""

import numpy as np
import pytest

from acquisition.storage.frames import FrameReadError, HDF5FrameHandler
from simulators.shared.frame_file import append_frame, create_frame_file


def flip_one_bit_of_frame(path, frame_index: int) -> None:
    """Flip one bit inside the stored chunk of ``frame_index`` (file bytes, as bit rot does)."""
    import h5py

    with h5py.File(path, "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info(frame_index).byte_offset
    with open(path, "r+b") as raw:
        raw.seek(offset + 100)
        byte = raw.read(1)
        raw.seek(offset + 100)
        raw.write(bytes([byte[0] ^ 0x10]))


def test_a_flipped_bit_is_caught_and_the_other_frames_still_read(tmp_path):
    path = tmp_path / "frames_000000.h5"
    file, dataset = create_frame_file(path, (16, 24))
    frames = [np.full((16, 24), 1000 + k, np.uint16) for k in range(3)]
    for frame in frames:
        append_frame(dataset, frame)
    file.close()
    flip_one_bit_of_frame(path, 1)
    handler = HDF5FrameHandler(str(path))
    try:
        assert np.array_equal(handler(0), frames[0]) and np.array_equal(handler(2), frames[2])
        with pytest.raises(FrameReadError, match=r"frames_000000\.h5.*frame 1"):
            handler(1)
    finally:
        handler.close()


def test_frames_are_written_with_a_checksum(tmp_path):
    file, dataset = create_frame_file(tmp_path / "f.h5", (4, 4))
    try:
        assert dataset.fletcher32 and dataset.chunks == (1, 4, 4)
    finally:
        file.close()


@pytest.mark.parametrize("compression", ["zlib", "bslz4"])
def test_compressed_frames_round_trip_and_a_flipped_bit_is_still_caught(tmp_path, compression):
    """Fletcher32 runs after shuffle + deflate (or bitshuffle/LZ4), on the stored bytes."""
    if compression == "bslz4":
        pytest.importorskip("hdf5plugin")
    path = tmp_path / "frames_000000.h5"
    file, dataset = create_frame_file(path, (64, 96), compression=compression)
    assert dataset.fletcher32 and (compression != "zlib" or
                                   (dataset.shuffle and dataset.compression == "gzip"))
    rng = np.random.default_rng(15)
    frames = [(1000 + 50 * rng.standard_normal((64, 96))).astype(np.uint16) for _ in range(3)]
    for frame in frames:
        append_frame(dataset, frame)
    file.close()
    handler = HDF5FrameHandler(str(path))
    try:
        assert all(np.array_equal(handler(k), frames[k]) for k in range(3))
    finally:
        handler.close()
    flip_one_bit_of_frame(path, 1)
    handler = HDF5FrameHandler(str(path))
    try:
        assert np.array_equal(handler(0), frames[0]) and np.array_equal(handler(2), frames[2])
        with pytest.raises(FrameReadError, match=r"frames_000000\.h5.*frame 1"):
            handler(1)
    finally:
        handler.close()


def test_an_unknown_compression_creates_no_file(tmp_path):
    with pytest.raises(ValueError, match="jpeg"):
        create_frame_file(tmp_path / "f.h5", (4, 4), compression="jpeg")
    assert not (tmp_path / "f.h5").exists()
