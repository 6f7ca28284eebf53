"""CONFIG_GET_FS_INFO: each volume as ``/<svm>/<volume>`` with real ``statvfs`` figures."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import ALL_ONES_64, FsInfoUnsupported


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, device, fs type) from the kernel's table, longest mount point first."""
    try:
        with open("/proc/self/mounts", "rb") as f:
            rows = [line.split()[:3] for line in f]
    except OSError:
        return []
    out = []
    for row in rows:
        if len(row) == 3:
            dev, point, fstype = (os.fsdecode(x).replace("\\040", " ") for x in row)
            out.append((point, dev, fstype))
    out.sort(key=lambda r: len(r[0]), reverse=True)
    return out


def _mount_of(path: str, mounts: Sequence[tuple[str, str, str]]) -> tuple[str, str]:
    real = os.path.realpath(path)
    for point, dev, fstype in mounts:
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return dev, fstype
    return "unknown", "unknown"


def describe_volumes(volumes: Iterable[tuple[str, object]], butypes: Sequence[str]) -> list:
    mounts = _mounts()
    kinds = ",".join(butypes)
    infos = []
    for svm, vol in volumes:
        path = os.fspath(vol.path)  # type: ignore[attr-defined]
        logical = f"/{svm}/{vol.name}"  # type: ignore[attr-defined]
        dev, fstype = _mount_of(path, mounts)
        try:
            st = os.statvfs(path)
        except OSError:
            infos.append(
                m.FsInfo(
                    unsupported=int(FsInfoUnsupported(0x1F)),
                    fs_type=fstype,
                    fs_logical_device=logical,
                    fs_physical_device=dev,
                    total_size=ALL_ONES_64,
                    used_size=ALL_ONES_64,
                    avail_size=ALL_ONES_64,
                    total_inodes=ALL_ONES_64,
                    used_inodes=ALL_ONES_64,
                    fs_env=[m.Pval(name="LOCAL", value="y")],
                    fs_status="offline: volume path unavailable",
                )
            )
            continue
        unsupported = 0
        total_inodes = st.f_files
        used_inodes = st.f_files - st.f_ffree
        if st.f_files == 0:  # file systems without inode accounting (btrfs, some FUSE)
            unsupported |= FsInfoUnsupported.TOTAL_INODES | FsInfoUnsupported.USED_INODES
            total_inodes = used_inodes = ALL_ONES_64
        infos.append(
            m.FsInfo(
                unsupported=int(unsupported),
                fs_type=fstype,
                fs_logical_device=logical,
                fs_physical_device=dev,
                total_size=st.f_blocks * st.f_frsize,
                used_size=(st.f_blocks - st.f_bfree) * st.f_frsize,
                avail_size=st.f_bavail * st.f_frsize,
                total_inodes=total_inodes,
                used_inodes=used_inodes,
                fs_env=[
                    m.Pval(name="LOCAL", value="y"),
                    m.Pval(name="TYPE", value=fstype),
                    m.Pval(name="AVAILABLE_BACKUP", value=kinds),
                    m.Pval(name="AVAILABLE_RECOVERY", value=kinds),
                ],
                fs_status="online",
            )
        )
    return infos
