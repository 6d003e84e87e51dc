"""tinyfleet: tiny multi-arch containers on fleets of small ARM boards.

One import namespace for everything installed, in layers that only import downwards:
`tinyfleet.protocol` (the wire contract, standard library only) and `tinyfleet.oci` (references,
registry client, platforms, packer) at the bottom; `tinyfleet.agent` (the board's `tinyfleet-agent`)
and `tinyfleet.provisioning` (cards, serial consoles, credentials) on them; `tinyfleet.controller`
(fleet, releases, rollouts, API, CLI, dashboard) on top. An agent-only install (`pip install
tinyfleet`) imports nothing from the operator side.
"""
