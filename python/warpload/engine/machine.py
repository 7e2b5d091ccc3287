"""Facts about this machine that decide how the engine allocates memory (read once, cached)."""
from __future__ import annotations

import functools
import glob
import os

from ..constants import ENV_HUGE_PAGES

# virtio ids (virtio spec 5.5): device 5 is the balloon; feature bit 5 is VIRTIO_BALLOON_F_REPORTING.
_VIRTIO_BALLOON_DEVICE = "0x0005"
_BALLOON_FEATURE_REPORTING = 5


def free_page_reporting() -> bool:
    """True when the kernel hands free memory back to a hypervisor (virtio-balloon free page reporting)."""
    for device in glob.glob("/sys/bus/virtio/devices/*"):
        try:
            with open(os.path.join(device, "device")) as handle:
                if handle.read().strip() != _VIRTIO_BALLOON_DEVICE:
                    continue
            with open(os.path.join(device, "features")) as handle:
                features = handle.read().strip()
        except OSError:
            continue
        if len(features) > _BALLOON_FEATURE_REPORTING and features[_BALLOON_FEATURE_REPORTING] == "1":
            return True
    return False


@functools.lru_cache(maxsize=None)
def _huge_pages_by_default() -> bool:
    # Measured on a Firecracker VM with free page reporting (benchmarks/RESULTS.md): memory idle
    # for ~2 s goes back to the host in 2 MiB blocks, and a fresh transparent huge page then costs
    # 4-10x more to fault in than 512 small pages (0.5-2.5 GB/s against 5.5 GB/s). On bare metal
    # huge pages cut the fault count 512-fold.
    return not free_page_reporting()


def use_huge_pages() -> bool:
    """Whether destinations get transparent-huge-page advice: WARPLOAD_HUGE_PAGES=0/1, else detected."""
    value = os.environ.get(ENV_HUGE_PAGES, "auto").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value != "auto":
        raise ValueError(f"{ENV_HUGE_PAGES}={value!r}: use 1, 0 or auto")
    return _huge_pages_by_default()
