"""tinyfleet-agent: runs on each board and reconciles the desired apps with the local Docker Engine.

Data flow of one pass: observe (engine + state file) -> plan (pure) -> execute steps -> report.
"""

__version__ = "0.1.0"
