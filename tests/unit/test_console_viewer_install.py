"""openhi viewer install: integrity pinned, only package/dist unpacked, the dist moved to /ohif/."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from openhi.console import viewer_install as vi

INDEX = (
    '<html><head><script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<script defer src="/app.bundle.js"></script><a href="//cdn.example/x">x</a></head></html>'
)


def package(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    files = {
        "package/dist/index.html": INDEX.encode(),
        "package/dist/app.bundle.js": b'(() => {\n__webpack_require__.p = "/";\n})();',
        "package/dist/app.bundle.css": b"@font-face{src:url(/a.woff2)}",
        "package/dist/manifest.json": b'{"start_url": "/", "icons": [{"src": "/assets/i.png"}]}',
        "package/dist/assets/i.png": b"\x89PNG",
        "package/README.md": b"readme",
        **(extra or {}),
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_the_dist_is_moved_under_the_prefix(tmp_path: Path) -> None:
    target = tmp_path / "viewer"
    target.mkdir()
    vi.unpack_dist(package(tmp_path / "p.tgz", {"package/dist/../../evil": b"x"}), target)
    assert not (tmp_path / "evil").exists()
    assert not (target / "README.md").exists()
    assert vi.rewrite_dist(target) == 4
    html = (target / "index.html").read_text()
    assert 'window.PUBLIC_URL="/ohif/"' in html
    assert 'href="/ohif/manifest.json"' in html and 'src="/ohif/app.bundle.js"' in html
    assert 'href="//cdn.example/x"' in html  # protocol-relative URLs are not paths of the dist
    assert '__webpack_require__.p = "/ohif/";' in (target / "app.bundle.js").read_text()
    assert "url(/ohif/a.woff2)" in (target / "app.bundle.css").read_text()
    manifest = (target / "manifest.json").read_text()
    assert '"start_url": "/ohif/"' in manifest and '"src": "/ohif/assets/i.png"' in manifest


def test_a_package_with_another_digest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(vi.InstallError, match="integrity"):
        vi.install(tmp_path / "data", package(tmp_path / "p.tgz"))
    assert not (tmp_path / "data" / "viewer").exists()


def test_install_replaces_an_earlier_one_when_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = package(tmp_path / "p.tgz")
    monkeypatch.setattr(vi, "INTEGRITY", vi.integrity_of(tarball))
    data = tmp_path / "data"
    (data / "viewer").mkdir(parents=True)
    (data / "viewer" / "stale.js").write_text("old")
    target = vi.install(data, tarball)
    assert target == data / "viewer"
    assert not (target / "stale.js").exists()
    assert vi.installed(data) == {
        "package": "@ohif/app",
        "version": vi.VERSION,
        "integrity": vi.INTEGRITY,
        "prefix": "/ohif/",
    }
    assert [p.name for p in data.iterdir()] == ["viewer"]  # no work folder left behind


def test_without_npm_install_says_so(tmp_path: Path) -> None:
    with pytest.raises(vi.InstallError, match="npm is not installed"):
        vi.npm_pack(tmp_path, npm="no-such-npm-command")
