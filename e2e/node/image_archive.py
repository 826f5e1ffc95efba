"""Write a one-layer image archive (the `docker save` format, which `ctr images import` and
`docker load` read) from a root directory, with no daemon and no registry.

    python3 image_archive.py ROOTDIR TAG ENTRYPOINT_JSON OUT.tar
"""

import hashlib
import io
import json
import sys
import tarfile


def main(root: str, tag: str, entrypoint: str, out: str) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(
            root,
            arcname=".",
            filter=lambda ti: (
                setattr(ti, "uid", 0),
                setattr(ti, "gid", 0),
                setattr(ti, "uname", ""),
                setattr(ti, "gname", ""),
                setattr(ti, "mtime", 0),
                ti,
            )[-1],
        )
    data = layer.getvalue()
    diff_id = hashlib.sha256(data).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Entrypoint": json.loads(entrypoint), "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": "e2e/node/image_archive.py"}
            ],
        }
    ).encode()
    cfg_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{cfg_id}.json", "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]
    ).encode()
    with tarfile.open(out, "w") as t:
        for name, blob in (
            (f"{diff_id}/layer.tar", data),
            (f"{cfg_id}.json", config),
            ("manifest.json", manifest),
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            t.addfile(ti, io.BytesIO(blob))


if __name__ == "__main__":
    main(*sys.argv[1:])
