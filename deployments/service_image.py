"""``make service-image``: package a registered model as a bento and build its container image.

What the deploy workflow does on a machine with Docker (``bentoml containerize``), here on podman when
there is no Docker daemon (``make images`` sets podman up and puts a stand-in for the public python base
image under its name). The image carries the model it was built from, as a fallback for when the
registry cannot be reached; it serves whatever the registry's ``champion`` is when it can.

    .venv/bin/python -m deployments.service_image --model flights-late-arrival --ref champion \\
        --tag localhost/driftloop/service:dev --backend podman
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from deployments.console import console
from tasks.core.settings import Settings
from tasks.core.store import open_store
from tasks.registry.packaging import build_bento, containerize
from tasks.registry.versions import Registry, RegistryError


def build_service_image(settings: Settings, model: str, ref: str, tag: str, backend: str) -> str:
    """Bento of ``model``'s ``ref`` (alias or version), then its image as ``tag``; returns the tag."""
    bento = build_bento(Registry(open_store(settings), model), ref, settings)
    return containerize(bento.bento_tag, tag, backend=backend, network="host")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    settings = Settings()
    parser.add_argument("--model", default=settings.serving.model_name or None, help="registered model name")
    parser.add_argument("--ref", default="champion", help="alias or version number to package")
    parser.add_argument("--tag", default="localhost/driftloop/service:dev", help="image tag to build")
    parser.add_argument(
        "--backend",
        default="docker" if shutil.which("docker") else "podman",
        choices=["docker", "podman"],
        help="container engine BentoML builds with",
    )
    parser.add_argument(
        "--unless-no-model",
        action="store_true",
        help="say so and succeed when the model has no such version yet (make images before make demo)",
    )
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))  # the one the flows use
    model = args.model or settings.load_dataset().model_name
    if args.unless_no_model:
        try:
            Registry(open_store(settings), model).resolve(args.ref)
        except RegistryError as exc:
            console.print(f"no service image: {exc} (the image carries a model: `make demo` trains one)")
            return 0
    started = time.monotonic()
    try:
        with console.status(f"packaging {model}:{args.ref} and building {args.tag} with {args.backend}..."):
            tag = build_service_image(settings, model, args.ref, args.tag, args.backend)
    except RegistryError as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    console.print(f"[green]built {tag}[/] in {time.monotonic() - started:.0f} s; run it with")
    console.print(f"  {args.backend} run --rm -p 127.0.0.1:3000:3000 -e DRIFTLOOP_STORE_URI=... {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
