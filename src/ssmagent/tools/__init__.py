"""Tools an agent acts through; each answers single-token commands with an observation."""

from ssmagent.tools.base import Tool, command_symbol, is_command_symbol, split_symbols
from ssmagent.tools.pointer import BOUNDARY, PointerSpec, PointerTape

__all__ = ["BOUNDARY", "PointerSpec", "PointerTape", "Tool", "command_symbol", "is_command_symbol", "split_symbols"]
