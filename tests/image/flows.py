"""The workflow module the image test copies into an image derived from loom-redis's
(`FROM loom-redis` + `COPY flows.py /app/`), as the README tells users to do.

Its activity reports who runs it and whether it can write to /tmp, so that the test
sees the worker's user and the read-only root from the workflow's result, and uses
tomli-w, a dependency that the derived image installs into the image's venv."""

import errno
import os

import loom_redis as loom


class ProbeInput(loom.Input):
    name: str


class ProbeState(loom.State):
    greeting: str
    toml: str
    uid: int
    gid: int
    tmp_write: str


@loom.activity(name="image_probe", timeout_seconds=10)
def probe_runtime(name: str) -> ProbeState:
    # Imported here: the process that starts the workflow needs only the class.
    import tomli_w

    try:
        with open("/tmp/loom-image-probe", "w") as scratch:
            scratch.write(name)
        tmp_write = "written"
    except OSError as exc:
        tmp_write = errno.errorcode.get(exc.errno or 0, str(exc))
    return ProbeState(
        greeting=f"Hello, {name}!",
        toml=tomli_w.dumps({"name": name}),
        uid=os.getuid(),
        gid=os.getgid(),
        tmp_write=tmp_write,
    )


@loom.workflow(name="ImageProbe", version="1.0.0")
class ImageProbe(loom.Workflow[ProbeInput, ProbeState]):
    @loom.step(name="probe")
    async def probe(self, ctx: loom.WorkflowContext[ProbeInput, ProbeState]) -> None:
        found = await ctx.activity(probe_runtime, ctx.input["name"])
        await ctx.state.update(lambda _: dict(found))
