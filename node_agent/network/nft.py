"""Running nft(8) in the node's network namespace.

Rulesets are applied with `nft -f -`, which is one transaction: the whole
file applies or nothing does. Tables are replaced with the idiom
`table X` / `delete table X` / `table X { ... }` so the result is exactly
the new content whatever was there before, with no window in between.
"""

from __future__ import annotations

import asyncio

from node_agent.network.errors import INTERFACE_FAILURE, CniError


def nft_command(netns_path: str | None) -> list[str]:
    """nft, entered into `netns_path` with nsenter when the node has its own namespace."""
    if netns_path:
        return ["nsenter", f"--net={netns_path}", "nft"]
    return ["nft"]


async def run_nft(netns_path: str | None, args: list[str], stdin: str | None = None) -> str:
    """Run nft with `args` (and `stdin`); its stdout. CniError 100 on failure."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *nft_command(netns_path), *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise CniError(INTERFACE_FAILURE, "cannot run nft", str(e)) from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise CniError(INTERFACE_FAILURE, f"nft {' '.join(args)} failed", err.decode(errors="replace").strip())
    return out.decode(errors="replace")


async def apply(netns_path: str | None, ruleset: str) -> None:
    """Apply `ruleset` atomically (`nft -f -`)."""
    await run_nft(netns_path, ["-f", "-"], ruleset)


def replace_table(family: str, name: str, body: str | None) -> str:
    """Ruleset text that makes table `family name` hold exactly `body` (None: removes it)."""
    text = f"table {family} {name}\ndelete table {family} {name}\n"
    if body is not None:
        text += f"table {family} {name} {{\n{body}}}\n"
    return text


async def list_table(netns_path: str | None, family: str, name: str) -> str | None:
    """The table's listing, or None when it does not exist."""
    try:
        return await run_nft(netns_path, ["list", "table", family, name])
    except CniError as e:
        if "No such file or directory" in e.details:
            return None
        raise
