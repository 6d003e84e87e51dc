"""PLACEHOLDER from the provisioning branch, replaced by the agent's real package at merge: provisioning
tests need `agent/units/tinyfleet-agent.service` as package data before the agent lands."""
