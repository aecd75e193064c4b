"""Tools an agent acts through; each answers single-token commands with an observation."""

from ssmagent.tools.base import Tool, command_symbol, is_command_symbol, split_symbols
from ssmagent.tools.edit import Edit
from ssmagent.tools.grep import Grep
from ssmagent.tools.pointer import BOUNDARY, PointerSpec, PointerTape
from ssmagent.tools.run import RunTool
from ssmagent.tools.viewer import FileViewer
from ssmagent.tools.workspace import ToolError, Workspace, WorkspaceTool, pack, unpack

__all__ = [
    "BOUNDARY",
    "Edit",
    "FileViewer",
    "Grep",
    "PointerSpec",
    "PointerTape",
    "RunTool",
    "Tool",
    "ToolError",
    "Workspace",
    "WorkspaceTool",
    "command_symbol",
    "is_command_symbol",
    "pack",
    "split_symbols",
    "unpack",
]
