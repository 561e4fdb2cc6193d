"""raymlp.textfiles: the one reader of UTF-8 text files with FILE / FILE:LINE errors."""

import pytest

from raymlp.textfiles import TextFileError, decode_utf8, read_bytes, read_utf8


def test_text_comes_back_as_written(tmp_path):
    file = tmp_path / "a.yaml"
    file.write_text("name: café\n", encoding="utf-8")
    assert read_utf8(file) == "name: café\n"


def test_a_bad_byte_is_named_by_its_line(tmp_path):
    file = tmp_path / "a.yaml"
    file.write_bytes(b"a: 1\nb: 2\nc: caf\xe9\n")
    with pytest.raises(TextFileError) as caught:
        read_utf8(file, "job.yaml")
    assert (caught.value.where, caught.value.problem) == ("job.yaml:3", "the file is not UTF-8 text")
    assert str(caught.value) == "job.yaml:3: the file is not UTF-8 text"
    with pytest.raises(TextFileError, match=r"^x:1: the file is not UTF-8 text$"):
        decode_utf8(b"\xff", "x")


def test_missing_and_unreadable_files_say_what_they_are(tmp_path):
    with pytest.raises(TextFileError, match=r": no such cluster file$"):
        read_utf8(tmp_path / "none.yaml", what="cluster file")
    with pytest.raises(TextFileError, match=r"^folder: cannot read the job file: "):
        read_bytes(tmp_path, "folder", what="job file")
    with pytest.raises(TextFileError, match=r": cannot read it: "):
        read_bytes(tmp_path, it="it")
