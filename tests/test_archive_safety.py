"""Archives are untrusted: verify refuses unsafe or unlisted members before it unpacks anything, and archive never
packs a partial output or a marker."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmprof.cli import main
from llmprof.evidence import archive as archive_module
from llmprof.evidence.archive import MANIFEST

CONFIG = "config/study.yaml"
#: A minimal study archive's files: enough for ``verify --no-rebuild`` to pass.
FILES = {CONFIG: b"runs:\n  r:\n    capture: captures/r.sqlite\n", "results/r/extract/metrics.json": b"{}\n"}
Member = tuple[tarfile.TarInfo, bytes]


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, b""


def manifest(files: dict[str, bytes], config: str = CONFIG) -> bytes:
    entries = [{"path": p, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in sorted(files.items())]
    return json.dumps({"llmprof": "0.1.0", "config": config, "runs": ["r"], "files": entries}).encode()


def tar_gz(out: Path, members: list[Member]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    out.write_bytes(gzip.compress(buffer.getvalue()))
    return out


def study_archive(out: Path, extra: Sequence[Member] = (), listed: dict[str, bytes] | None = None) -> Path:
    """The minimal study's archive with ``extra`` members; the manifest lists ``listed`` (default: the files)."""
    files = [regular(name, data) for name, data in FILES.items()]
    return tar_gz(out, [regular(MANIFEST, manifest(FILES if listed is None else listed)), *files, *extra])


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: a file's bytes, None for a folder or link."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder verify works in, inside the test's folder, so a write outside it can be seen."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def refused(archive: Path, tmp_path: Path, scratch: Path) -> str:
    """Verify ``archive``: exit status 1, one ``Error:`` line and nothing else, nothing written anywhere; the line."""
    before = tree(tmp_path)
    result = CliRunner().invoke(main, ["verify", str(archive), "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert tree(tmp_path) == before and not any(scratch.iterdir())
    return lines[0]


def test_a_valid_archive_verifies_with_folders_listed_or_not(tmp_path: Path, scratch: Path) -> None:
    folders = [special(name, tarfile.DIRTYPE) for name in ("results", "results/r/")]
    archive = study_archive(tmp_path / "a.tar.gz", folders)
    result = CliRunner().invoke(main, ["verify", str(archive), "--no-rebuild", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 checksums checked, 0 artifacts rebuilt, 0 problem(s)" in result.output
    assert not any(scratch.iterdir())


def test_a_changed_byte_is_reported_not_refused(tmp_path: Path, scratch: Path) -> None:
    listed = {**FILES, "results/r/extract/metrics.json": b"[]\n"}
    archive = study_archive(tmp_path / "a.tar.gz", listed=listed)
    result = CliRunner().invoke(main, ["verify", str(archive), "--no-rebuild", "--quiet"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "checksum mismatch: results/r/extract/metrics.json"
    assert "Error: " in result.output.splitlines()[-1] and "verification failed" in result.output


def test_absolute_member_is_refused_and_its_target_untouched(tmp_path: Path, scratch: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_bytes(b"original")
    name = str(target)  # absolute: /…/victim.txt
    archive = study_archive(tmp_path / "a.tar.gz", [regular(name, b"overwritten")], {**FILES, name: b"overwritten"})
    line = refused(archive, tmp_path, scratch)
    assert repr(name) in line and "absolute path" in line
    assert target.read_bytes() == b"original"


@pytest.mark.parametrize(
    "name", ["../../../victim.txt", "results/../../../../victim.txt", "results/r/../../../../../victim.txt"]
)
def test_climbing_member_is_refused_and_its_target_untouched(tmp_path: Path, scratch: Path, name: str) -> None:
    """verify unpacks into scratch/llmprof-verify-…/archive, so three '..' reach the test's folder."""
    target = tmp_path / "victim.txt"
    target.write_bytes(b"original")
    archive = study_archive(tmp_path / "a.tar.gz", [regular(name, b"overwritten")], {**FILES, name: b"overwritten"})
    line = refused(archive, tmp_path, scratch)
    assert repr(name) in line and "'..'" in line
    assert target.read_bytes() == b"original"
    assert not (scratch / "victim.txt").exists() and not (tmp_path.parent / "victim.txt").exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("results\\..\\..\\victim.txt", "backslash"),
        ("results//r/x.txt", "not normalised"),
        ("./results/r/x.txt", "not normalised"),
        ("results/./x.txt", "not normalised"),
        ("results/r/x\n.txt", "control character"),
        ("C:/victim.txt", "absolute path"),
    ],
)
def test_names_that_are_not_plain_relative_paths_are_refused(
    tmp_path: Path, scratch: Path, name: str, why: str
) -> None:
    archive = study_archive(tmp_path / "a.tar.gz", [regular(name, b"x")], {**FILES, name: b"x"})
    line = refused(archive, tmp_path, scratch)
    assert why in line and "nothing was unpacked" in line


def test_symlink_member_is_refused_and_nothing_written_through_it(tmp_path: Path, scratch: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [special("results/r/escape", tarfile.SYMTYPE, str(outside)), regular("results/r/escape/x", b"x")]
    archive = study_archive(tmp_path / "a.tar.gz", members, {**FILES, "results/r/escape/x": b"x"})
    line = refused(archive, tmp_path, scratch)
    assert "'results/r/escape' is a symbolic link" in line
    assert not any(outside.iterdir())


def test_hardlink_member_is_refused(tmp_path: Path, scratch: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_bytes(b"original")
    archive = study_archive(tmp_path / "a.tar.gz", [special("results/r/hard", tarfile.LNKTYPE, str(target))])
    line = refused(archive, tmp_path, scratch)
    assert "'results/r/hard' is a hard link" in line
    assert target.read_bytes() == b"original"


@pytest.mark.parametrize(("kind", "why"), [(tarfile.CHRTYPE, "device"), (tarfile.FIFOTYPE, "FIFO")])
def test_devices_and_fifos_are_refused(tmp_path: Path, scratch: Path, kind: bytes, why: str) -> None:
    archive = study_archive(tmp_path / "a.tar.gz", [special("results/r/odd", kind)])
    assert f"'results/r/odd' is a {why}" in refused(archive, tmp_path, scratch)


def test_unlisted_members_are_refused_first_named_and_counted(tmp_path: Path, scratch: Path) -> None:
    extra = [regular("results/r/extra-b.txt", b"b"), regular("results/r/extra-a.txt", b"a")]
    line = refused(study_archive(tmp_path / "a.tar.gz", extra), tmp_path, scratch)
    assert "'results/r/extra-a.txt' is not listed in MANIFEST.json (2 unlisted members in all)" in line


def test_listed_member_missing_is_refused(tmp_path: Path, scratch: Path) -> None:
    archive = study_archive(tmp_path / "a.tar.gz", listed={**FILES, "results/r/gone.txt": b"gone"})
    line = refused(archive, tmp_path, scratch)
    assert "'results/r/gone.txt' is listed in MANIFEST.json but not in the archive" in line


@pytest.mark.parametrize(
    ("second", "why"),
    [
        ("results/r/extract/metrics.json", "is in the archive more than once"),
        ("results/r/extract/metrics.json/x", "is both a file and a folder"),
    ],
)
def test_duplicate_and_clashing_members_are_refused(tmp_path: Path, scratch: Path, second: str, why: str) -> None:
    archive = study_archive(tmp_path / "a.tar.gz", [regular(second, b'{"evil": 1}\n')])
    line = refused(archive, tmp_path, scratch)
    assert "'results/r/extract/metrics.json" in line and why in line


def test_names_equal_after_unicode_normalisation_are_refused(tmp_path: Path, scratch: Path) -> None:
    composed, decomposed = "results/r/caf\u00e9.txt", "results/r/cafe\u0301.txt"
    files = {**FILES, composed: b"1", decomposed: b"2"}
    archive = study_archive(tmp_path / "a.tar.gz", [regular(composed, b"1"), regular(decomposed, b"2")], files)
    assert "only by Unicode normalisation" in refused(archive, tmp_path, scratch)


def test_member_over_the_size_limit_is_refused(tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "MAX_MEMBER_BYTES", 1000)
    big = b"\0" * 2000
    archive = study_archive(
        tmp_path / "a.tar.gz", [regular("results/r/big.bin", big)], {**FILES, "results/r/big.bin": big}
    )
    line = refused(archive, tmp_path, scratch)
    assert "'results/r/big.bin': 2000 bytes (limit 1000)" in line and "MAX_MEMBER_BYTES" in line


def test_members_over_the_total_limit_are_refused(
    tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "MAX_TOTAL_BYTES", 3000)
    parts = {f"results/r/part{i}.bin": b"\0" * 900 for i in range(4)}
    members = [regular(name, data) for name, data in parts.items()]
    line = refused(study_archive(tmp_path / "a.tar.gz", members, {**FILES, **parts}), tmp_path, scratch)
    assert "'results/r/part" in line and "MAX_TOTAL_BYTES" in line


def test_too_many_members_are_refused(tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "MAX_MEMBERS", 5)
    members = [regular(f"results/r/{i}.txt", b"") for i in range(10)]
    assert "MAX_MEMBERS" in refused(study_archive(tmp_path / "a.tar.gz", members), tmp_path, scratch)


def test_the_decompressed_stream_stops_at_its_limit(
    tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers and padding count too: many empty members pass the stream's limit though their files hold nothing."""
    monkeypatch.setattr(archive_module, "MAX_TOTAL_BYTES", 1000)
    monkeypatch.setattr(archive_module, "MAX_METADATA_BYTES", 4096)
    members = [regular(f"results/r/{i}.txt", b"") for i in range(20)]
    line = refused(study_archive(tmp_path / "a.tar.gz", members), tmp_path, scratch)
    assert "after member 'results/r/" in line and "more than 5096 bytes once decompressed" in line


def _pax_bomb() -> bytes:
    """A tar whose extended header claims, and holds, 64 MiB (gzip makes it 64 KiB)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 64 * 2**20
    return header.tobuf(tarfile.USTAR_FORMAT) + b"\0" * header.size


def _size_bomb() -> bytes:
    """A tar member whose ustar header says 0 bytes and whose extended header says 10 GiB (which are not there)."""
    info = tarfile.TarInfo("results/r/bomb.bin")
    info.size = 10 * 2**30
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize(("bomb", "why"), [(_pax_bomb, "a header of"), (_size_bomb, "MAX_MEMBER_BYTES")])
def test_decompression_bombs_are_stopped_before_they_inflate(
    tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, bomb: Callable[[], bytes], why: str
) -> None:
    """The stream refuses to read on past its limits, whatever the headers say: little is ever decompressed."""
    info, data = regular(MANIFEST, manifest(FILES))
    first = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * (-len(data) % 512)
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(first + bomb()))
    inflated: list[int] = []
    read = gzip.GzipFile.read

    def counted(self: gzip.GzipFile, size: int = -1) -> bytes:
        data = read(self, size)
        inflated.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counted)
    line = refused(archive, tmp_path, scratch)
    assert why in line and ("after member 'MANIFEST.json'" in line or "member 'results/r/bomb.bin'" in line)
    assert sum(inflated) < 2**20


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe", "is not valid JSON"),
        (b"[" * 100_000, "is not valid JSON"),
        (b"[]", "is not a JSON object with a list of files"),
        (b'{"files": [{"path": "x"}], "runs": [], "config": "x"}', "gives 'x' no byte count or no sha256"),
        (b'{"files": [], "runs": ["r"], "config": "config/study.yaml"}', "names no config"),
    ],
)
def test_malformed_manifest_is_one_error_line(tmp_path: Path, scratch: Path, text: bytes, why: str) -> None:
    files = [regular(name, data) for name, data in FILES.items()]
    archive = tar_gz(tmp_path / "a.tar.gz", [regular(MANIFEST, text), *files])
    line = refused(archive, tmp_path, scratch)
    assert "member 'MANIFEST.json'" in line and why in line


def test_archive_without_manifest_is_refused(tmp_path: Path, scratch: Path) -> None:
    archive = tar_gz(tmp_path / "a.tar.gz", [regular(name, data) for name, data in FILES.items()])
    assert "no member 'MANIFEST.json'" in refused(archive, tmp_path, scratch)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda good: gzip.decompress(good), id="plain-tar"),
        pytest.param(lambda good: b"not an archive at all", id="text"),
        pytest.param(lambda good: gzip.compress(b"hello"), id="gzip-not-tar"),
        pytest.param(lambda good: good[: len(good) // 2], id="truncated"),
        pytest.param(lambda good: b"", id="empty"),
    ],
)
def test_not_a_tar_gz_is_one_error_line(tmp_path: Path, scratch: Path, content: Callable[[bytes], bytes]) -> None:
    good = study_archive(tmp_path / "good.tar.gz").read_bytes()
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(content(good))
    line = refused(archive, tmp_path, scratch)
    assert str(archive) in line and "gzip-compressed tar" in line


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "own-checks"])
@pytest.mark.parametrize("absolute", [False, True], ids=["climbing", "absolute"])
def test_unpacking_holds_even_if_the_member_checks_were_bypassed(
    tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool, absolute: bool
) -> None:
    """The second line of defence: with every name let through by the first, nothing lands outside the folder.

    (tarfile's data filter unpacks an absolute name inside the folder, without its leading slash; the rebuild then
    fails on the study's missing capture. Either way the verify folder is all that was written, and removed.)
    """
    monkeypatch.setattr(archive_module, "_name_problem", lambda name: None)
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    target = tmp_path / "victim.txt"
    target.write_bytes(b"original")
    name = str(target) if absolute else "../../../victim.txt"
    archive = study_archive(tmp_path / "a.tar.gz", [regular(name, b"overwritten")], {**FILES, name: b"overwritten"})
    line = refused(archive, tmp_path, scratch)
    if not (absolute and data_filter):
        assert "cannot unpack" in line and "victim.txt" in line
    assert target.read_bytes() == b"original"


def test_own_checks_unpack_a_valid_archive(tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    result = CliRunner().invoke(main, ["verify", str(study_archive(tmp_path / "a.tar.gz")), "--no-rebuild"])
    assert result.exit_code == 0 and "0 problem(s)" in result.output, result.output


def test_archived_config_may_not_point_outside_the_archive(tmp_path: Path, scratch: Path) -> None:
    files = {CONFIG: b"runs:\n  r:\n    capture: ../../outside.sqlite\n", "results/r/extract/metrics.json": b"{}\n"}
    archive = tar_gz(
        tmp_path / "a.tar.gz", [regular(MANIFEST, manifest(files)), *(regular(n, d) for n, d in files.items())]
    )
    result = CliRunner().invoke(main, ["verify", str(archive), "--quiet"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: the archived config names '../../outside.sqlite', outside the archive; "
        "ask its sender for the archive `llmprof archive` wrote"
    ]
    assert not any(scratch.iterdir())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal project: one capture run's results, with partial outputs and markers beside the real ones."""
    root = tmp_path / "project"
    for path, text in {
        CONFIG: "runs:\n  r:\n    capture: captures/r.sqlite\n",
        "captures/r.sqlite": "capture",
        "results/r/extract/metrics.json": "{}\n",
        "results/r/extract/.llmprof-output": "{}\n",
        "results/r/provenance.json": "{}\n",
        "results/r/.provenance.json.llmprof-output": "{}\n",
        "results/r/.provenance.json.partial-0a1b2c3d-4242-x1y2": "{}\n",
        "results/r/.report.partial-0a1b2c3d-4242-abcd/report.md": "half\n",
        "results/r/.report.partial-0a1b2c3d-4242-abcd/.llmprof-output": "{}\n",
        "results/study/report.md": "# study\n",
        "results/study/.figures.partial-0a1b2c3d-4242-abcd/throughput.png": "half",
        "results/study/figures/.throughput.png.partial-0a1b2c3d-4242-abcd": "half",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def _archive(project: Path, out: Path, *extra: str) -> list[str]:
    args = ["archive", "--config", str(project / CONFIG), "--root", str(project), "-o", str(out), "--quiet", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with tarfile.open(out, "r:gz") as tar:
        return tar.getnames()


def test_archive_leaves_out_partial_outputs_and_markers(project: Path, tmp_path: Path) -> None:
    names = _archive(project, tmp_path / "a.tar.gz")
    assert names == [
        MANIFEST,
        "captures/r.sqlite",
        CONFIG,
        "results/r/extract/metrics.json",
        "results/r/provenance.json",
        "results/study/report.md",
    ]


def test_archive_force_replaces_its_own_archive(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.tar.gz"
    first = _archive(project, out)
    (project / "results/r/extract/metrics.json").write_text('{"changed": true}\n')
    assert _archive(project, out, "--force") == first
    with tarfile.open(out, "r:gz") as tar:
        packed = tar.extractfile("results/r/extract/metrics.json")
        assert packed is not None and packed.read() == b'{"changed": true}\n'
    result = CliRunner().invoke(
        main, ["archive", "--config", str(project / CONFIG), "--root", str(project), "-o", str(out)]
    )
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
