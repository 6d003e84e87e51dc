"""Apply a first-boot plan (provisioning.firstboot) to the FAT boot partition of an image or card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinyfleet.provisioning.device import DeviceSettings
from tinyfleet.provisioning.errors import ImageError
from tinyfleet.provisioning.fat import FatVolume
from tinyfleet.provisioning.firstboot import WHEELS, BootOptions, Style, detect, plan, seed_label


@dataclass(frozen=True)
class Customized:
    style: Style
    written: tuple[str, ...]
    cmdline: str
    label: str = ""


def customize(volume: FatVolume, settings: DeviceSettings, options: BootOptions, style: Style | None = None,
              wheels: tuple[Path, ...] = (), pinned: str | None = None) -> Customized:
    """`wheels` go to tinyfleet/wheels/; with `pinned` (the agent requirement they hold, dependencies
    included) the board installs from them alone, else the first is the agent and the index has the rest."""
    names = volume.list()
    cmdline = volume.read_text("cmdline.txt", "")
    if not volume.exists("cmdline.txt"):
        raise ImageError(f"the boot partition has no cmdline.txt (it holds {', '.join(names) or 'nothing'}): "
                         "not a Raspberry Pi boot partition")
    assert cmdline is not None
    chosen = style or detect(names, cmdline)
    for wheel in wheels:
        if not wheel.name.endswith(".whl"):
            raise ImageError(f"{wheel} is not a wheel (.whl)")
    if wheels:
        options = BootOptions(**{**options.__dict__, "wheels": tuple(w.name for w in wheels), "pinned": pinned})
    config = volume.read_text("config.txt", "") if options.enable_uart else None
    edits = plan(chosen, settings, options, cmdline, config)
    for name in edits.delete:
        volume.delete(name)
    for name, data in edits.files.items():
        volume.write(name, data)
    written = list(edits.files)
    for wheel in wheels:
        volume.write(f"{WHEELS}/{wheel.name}", wheel.read_bytes())
        written.append(f"{WHEELS}/{wheel.name}")
    if edits.cmdline != cmdline:
        volume.write("cmdline.txt", edits.cmdline.encode())
        written.append("cmdline.txt")
    if edits.config_txt is not None and edits.config_txt != config:
        volume.write("config.txt", edits.config_txt.encode())
        written.append("config.txt")
    label = volume.label()
    new_label = seed_label(label, edits.files) if chosen is Style.CLOUD_INIT else None
    if new_label is not None:
        volume.set_label(new_label)
        label = new_label
    return Customized(chosen, tuple(written), edits.cmdline.strip(), label)
