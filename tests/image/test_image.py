"""The Dockerfile built for real and run (`make test-image`; marked `image`, so that
`make test` leaves it out). Needs root, buildah and debootstrap (Debian packages).

There is no Docker engine or registry here. buildah builds the Dockerfile (chroot
isolation, vfs storage in a temporary directory removed at the end) on a local base: a
Debian minbase with python3 that debootstrap makes from this machine's own apt mirror,
cached in .cache/image/ (about a minute to make, seconds to reuse). The worker runs as
the image says (entrypoint, command, environment, working directory, user), chrooted
into the image's root filesystem bind-mounted read-only, as Kubernetes'
`readOnlyRootFilesystem: true` has it, on the host's network. Timings are printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

import loom_redis as loom
from tests.image.flows import ImageProbe

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "image"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# A new name when the way the base is made changes, so that an old cache is not reused.
BASE_RECIPE = "minbase-slim-1"
BASE = "localhost/loom-redis-test-base"
IMAGE = "localhost/loom-redis:test"
APP = "localhost/loom-redis-test-app"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A build that reaches PyPI through a proxy that only this machine's trust store knows
# needs that store; it is mounted into the build's RUN steps, and no layer keeps it.
HOST_CERTIFICATES = "/etc/ssl/certs:/etc/ssl/certs:ro"

# The README's recipe for adding workflow code and its dependencies to the image.
DERIVED = """\
FROM {image}
USER root
RUN pip install --no-cache-dir tomli-w
USER 10001:10001
COPY flows.py /app/
"""

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]


@contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"\nimage test: {what}: {time.monotonic() - started:.1f} s", flush=True)


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout.strip()


def apt_mirror() -> tuple[str, str]:
    """This machine's Debian mirror (from its apt sources, in either format) and release."""
    release = Path("/etc/os-release").read_text()
    codename = re.search(r"^VERSION_CODENAME=\"?(\w+)", release, re.MULTILINE)
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*"))]:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        text = path.read_text()
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE)
        uris += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.MULTILINE)
        mirrors = [uri for uri in uris if "security" not in uri]
        if mirrors and codename:
            return mirrors[0], codename.group(1)
    raise AssertionError("no Debian mirror in /etc/apt/sources.list*, or no VERSION_CODENAME")


def base_tarball() -> Path:
    """The debootstrap base as a tar of its root filesystem, made once per mirror,
    release and package list."""
    mirror, release = apt_mirror()
    key = hashlib.sha256(
        " ".join([BASE_RECIPE, mirror, release, *BASE_PACKAGES]).encode()
    ).hexdigest()
    tarball = CACHE / f"base-{release}-{key[:12]}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        rootfs, partial = Path(work) / "rootfs", Path(work) / "base.tar"
        include = ",".join(BASE_PACKAGES)
        run(
            "debootstrap", "--variant=minbase", f"--include={include}", release, str(rootfs), mirror
        )
        # apt's lists and cache, docs and translations: half the base, which buildah's vfs
        # storage copies at every build step.
        slim = [f"--exclude=./{d}/*" for d in ("var/lib/apt/lists", "var/cache/apt")]
        slim += [f"--exclude=./usr/share/{d}/*" for d in ("doc", "man", "info", "locale")]
        run("tar", "-C", str(rootfs), *slim, "-cf", str(partial), ".")
        partial.rename(tarball)
    return tarball


class Buildah:
    """buildah on a storage of its own (vfs, which needs no kernel overlay support)."""

    def __init__(self, storage: Path) -> None:
        self.options = ["--root", str(storage / "root"), "--runroot", str(storage / "run")]
        self.options += ["--storage-driver", "vfs"]

    def __call__(self, *args: str) -> str:
        return run("buildah", *self.options, *args)

    def build(self, context: Path, tag: str, *options: str) -> None:
        self("bud", "--isolation", "chroot", "--tag", tag, *options, str(context))

    def config(self, image: str) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self("inspect", "--type", "image", image))
        return dict(config["OCIv1"]["config"])

    def root_of(self, image: str) -> Path:
        """The root filesystem of a new container of `image` (a plain directory on vfs)."""
        return Path(self("mount", self("from", image)))


@contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as target:
        run("mount", "--bind", str(directory), target)
        try:
            run("mount", "-o", "remount,bind,ro", target)
            yield Path(target)
        finally:
            run("umount", target)


@contextmanager
def image_process(
    root: Path, config: dict[str, Any], env: dict[str, str], output: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The image's entrypoint and command, run as its user in its working directory,
    chrooted into `root`; killed on exit if still running."""
    uid, gid = (int(part) for part in config["User"].split(":"))

    def enter_image() -> None:
        os.chroot(root)
        os.chdir(config["WorkingDir"])
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    with open(output, "wb") as log:
        process = subprocess.Popen(
            [*config["Entrypoint"], *config["Cmd"]],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=enter_image,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def buildah() -> Iterator[Buildah]:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(
            "the image test runs as root with buildah and debootstrap "
            f"(uid {os.geteuid()}; missing: {', '.join(missing) or 'nothing'})"
        )
    storage = Path(tempfile.mkdtemp(prefix="loom-redis-image-", dir="/var/tmp"))
    try:
        yield Buildah(storage)
    finally:
        subprocess.run(["buildah", *Buildah(storage).options, "rm", "--all"], capture_output=True)
        shutil.rmtree(storage)


@pytest.fixture(scope="module")
def image(buildah: Buildah) -> str:
    """The Dockerfile built on the debootstrap base."""
    with timed("debootstrap base (made, or taken from .cache/image/)"):
        tarball = base_tarball()
    with timed("base imported into buildah"):
        container = buildah("from", "scratch")
        buildah("add", container, str(tarball), "/")
        buildah("config", "--env", f"PATH={STANDARD_PATH}", container)
        buildah("commit", "--rm", container, BASE)
    with timed("Dockerfile built"):
        buildah.build(
            ROOT, IMAGE, "--build-arg", f"BASE_IMAGE={BASE}", "--volume", HOST_CERTIFICATES
        )
    return IMAGE


def distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "_", name.group(0)).lower()


def test_image_runs_loom_as_uid_10001_with_runtime_dependencies_only(
    buildah: Buildah, image: str
) -> None:
    config = buildah.config(image)
    assert (config["User"], config["Entrypoint"], config["Cmd"]) == (
        "10001:10001",
        ["loom"],
        ["worker"],
    )

    container = buildah("from", image)
    usage = buildah("run", "--isolation", "chroot", container, "--", "loom", "--help")
    assert "Run a worker" in usage
    dashboard = buildah("run", "--isolation", "chroot", container, "--", "loom", "web", "--help")
    assert "Serve the dashboard" in dashboard

    root = Path(buildah("mount", container))
    (site,) = root.glob("opt/loom/lib/python3*/site-packages")
    installed = {distribution(info.name.split("-")[0]) for info in site.glob("*.dist-info")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = {distribution(r) for r in project["dependencies"] + extras["web"]} | {"loom_redis"}
    assert runtime <= installed
    # (The dev extra names loom-redis[web] itself.)
    tools = {distribution(r) for r in extras["dev"]} - {"loom_redis"}
    tools |= {"setuptools", "wheel", "build"}
    assert installed & tools == set()
    assert any((site / "loom_redis" / "store" / "scripts").glob("*.lua"))
    assert not [p for p in ("src", "dist", "opt/build", "app/tests") if (root / p).exists()]


@pytest.mark.anyio
async def test_worker_of_a_derived_image_finishes_a_workflow_on_a_read_only_root(
    buildah: Buildah,
    image: str,
    client: loom.Client,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    context = tmp_path / "app"
    context.mkdir()
    shutil.copy(Path(__file__).with_name("flows.py"), context / "flows.py")
    (context / "Dockerfile").write_text(DERIVED.format(image=image))
    with timed("derived image (FROM loom-redis, a dependency, COPY flows.py) built"):
        buildah.build(context, APP, "--volume", HOST_CERTIFICATES)
    config = buildah.config(APP)
    env = dict(entry.split("=", 1) for entry in config["Env"])
    env |= {
        "LOOM_REDIS_URL": redis_url,
        "LOOM_NAMESPACE": namespace,
        "LOOM_WORKER_MODULES": "flows",
    }
    output = tmp_path / "worker.log"
    with (
        read_only(buildah.root_of(APP)) as root,
        image_process(root, config, env, output) as worker,
    ):
        with timed("workflow run by the image's worker"):
            handle = await client.start(ImageProbe, {"name": "image"})
            state = await handle.result(timeout=60)
        worker.send_signal(signal.SIGTERM)
        exit_status = await anyio.to_thread.run_sync(worker.wait)

    assert state == {
        "greeting": "Hello, image!",
        "toml": 'name = "image"\n',
        "uid": 10001,
        "gid": 10001,
        "tmp_write": "EROFS",
    }
    assert exit_status == 0, output.read_text()
