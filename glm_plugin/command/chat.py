"""`glm-plugin chat`: a streaming terminal chat with a GLM server that shows thinking, tool calls and answers.

Why in the package: it is the shortest way to see what a GLM server does (thinking dimmed, each tool call with its
typed arguments, the local tool's result, the answer built from it) and it is the client that does the round trip
right: the call turn goes back with its `reasoning_content`, which GLM-4.7's preserved thinking expects (without it
GLM answers the tool result badly; docs/troubleshooting.md). `--script FILE` replays typed lines, which is how
`make demo` runs. Rendering is rich's; nothing here writes terminal control codes by hand.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Iterable, TextIO

import httpx
from rich.console import Console
from rich.text import Text

from glm_plugin.command import demo_tools
from glm_plugin.command.chat_client import ChatEndpoint, Reply, reply_from_stream
from glm_plugin.command.endpoint import EndpointError

MAX_TOOL_ROUNDS = 4  # a model that keeps calling tools is stopped after this many rounds per user turn
HELP = ("/thinking on|off   thinking mode (chat_template_kwargs.enable_thinking)\n"
        f"/tools a,b | none  which local tools the model sees ({', '.join(demo_tools.SCHEMAS)})\n"
        "/reset             forget the conversation\n"
        "/quit              leave")


@dataclass
class ChatSession:
    """The conversation and the settings the slash commands change."""

    endpoint: ChatEndpoint
    console: Console
    max_tokens: int = 512
    temperature: float = 0.0
    thinking: bool = True
    tools: list[str] = field(default_factory=lambda: list(demo_tools.SCHEMAS))
    messages: list[dict] = field(default_factory=list)

    def command(self, line: str) -> bool:
        """Apply a slash command; False means quit."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit"):
            return False
        if name == "thinking" and arg in ("on", "off"):
            self.thinking = arg == "on"
            self.console.print(f"[cyan]thinking {arg}[/cyan]")
        elif name == "tools":
            chosen = [] if arg == "none" else [t.strip() for t in arg.split(",") if t.strip()]
            unknown = [t for t in chosen if t not in demo_tools.SCHEMAS]
            if unknown:
                self.console.print(f"[red]unknown tools {unknown}; choose from {list(demo_tools.SCHEMAS)}[/red]")
            else:
                self.tools = chosen
                self.console.print(f"[cyan]tools: {', '.join(chosen) or 'none'}[/cyan]")
        elif name == "reset":
            self.messages.clear()
            self.console.print("[cyan]conversation cleared[/cyan]")
        else:
            self.console.print(HELP)
        return True

    def _request(self) -> Reply:
        params = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                  "chat_template_kwargs": {"enable_thinking": self.thinking}}
        if self.tools:
            params["tools"] = [demo_tools.SCHEMAS[t] for t in self.tools]
        shown = {"section": None}

        def show(kind: str, text: str) -> None:
            if kind in ("tool_name", "tool_args"):
                return  # a call is printed whole once complete, with its parsed arguments
            if shown["section"] != kind:
                if shown["section"] is not None:
                    self.console.print()
                self.console.print(Text("thinking: " if kind == "reasoning" else "glm: ",
                                        style="dim italic" if kind == "reasoning" else "bold green"), end="")
                shown["section"] = kind
            self.console.print(Text(text, style="dim italic" if kind == "reasoning" else ""), end="")

        reply = reply_from_stream(self.endpoint.stream(self.messages, **params), show)
        if shown["section"] is not None:
            self.console.print()
        return reply

    def turn(self, user_text: str) -> Reply:
        """One user turn: ask, run the tool calls locally, send results (with the call's thinking), repeat."""
        self.messages.append({"role": "user", "content": user_text})
        for _ in range(MAX_TOOL_ROUNDS):
            reply = self._request()
            self.messages.append(reply.history_message())
            if not reply.tool_calls:
                if reply.finish_reason == "length":
                    self.console.print(f"[yellow](stopped at max_tokens={self.max_tokens})[/yellow]")
                return reply
            for call in reply.tool_calls:
                try:
                    shown_args = json.dumps(call.parsed())
                except ValueError:
                    shown_args = call.arguments + "  (not valid JSON)"
                self.console.print(Text.assemble(("tool call: ", "bold magenta"), (call.name, "magenta"),
                                                 (" " + shown_args, "")))
                result = demo_tools.run_tool(call.name, call.arguments)
                self.console.print(Text.assemble(("tool result: ", "bold blue"), (result, "blue")))
                self.messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        self.console.print(f"[yellow]stopped after {MAX_TOOL_ROUNDS} rounds of tool calls[/yellow]")
        return reply


def script_lines(text: str) -> list[str]:
    """A script is what the user would type: one line each; blank lines and `#` comments are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_lines(session: ChatSession, lines: Iterable[str], echo: bool) -> None:
    for line in lines:
        if echo:
            session.console.print(Text.assemble(("you: ", "bold cyan"), line))
        if line.startswith("/"):
            if not session.command(line):
                return
            continue
        session.turn(line)


def interactive_lines(console: Console) -> Iterable[str]:
    console.print("[dim]Type a message; /help for commands, /quit or Ctrl-D to leave.[/dim]")
    while True:
        try:
            line = console.input("[bold cyan]you: [/bold cyan]").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if line:
            yield line


def main(url: str, model: str | None, script: str | None, api_key: str | None = None, max_tokens: int = 512,
         temperature: float = 0.0, file: TextIO | None = None) -> int:
    console = Console(file=file or sys.stdout, highlight=False)
    try:
        endpoint = ChatEndpoint(url, model, api_key)
    except EndpointError as err:
        console.print(Text(f"glm-plugin chat: {err}", style="red"))
        return 2
    session = ChatSession(endpoint, console, max_tokens=max_tokens, temperature=temperature)
    console.print(f"[dim]glm-plugin chat: {endpoint.model} at {endpoint.root}; "
                  f"tools: {', '.join(session.tools)}[/dim]")
    try:
        if script:
            with open(script) if script != "-" else sys.stdin as handle:
                run_lines(session, script_lines(handle.read()), echo=True)
        else:
            run_lines(session, interactive_lines(console), echo=False)
    except (EndpointError, OSError) as err:
        console.print(Text(f"glm-plugin chat: {err}", style="red"))
        return 1
    except httpx.HTTPError as err:  # the server went away mid-chat
        console.print(Text(f"glm-plugin chat: {endpoint.root} stopped answering ({type(err).__name__}: {err})",
                           style="red"))
        return 1
    finally:
        endpoint.close()
    return 0
