"""Writes golden.json: each template in this folder rendered by Python's
jinja2 the way Hugging Face transformers renders chat templates (a sandboxed
environment with trim_blocks and lstrip_blocks, loop controls, tojson without
ASCII escaping, raise_exception and strftime_now), with the variables
llama.cpp's server passes to a file's template: messages, bos_token,
eos_token, add_generation_prompt, enable_thinking (true) and date_string /
datetime for a fixed day. chattmpl's tests render the same cases with the Go
engine and compare byte for byte.

Run from this folder: python3 golden.py  (jinja2 3.1)
"""

import datetime
import json

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

DAY = datetime.date(2026, 12, 6)

# (template file, bos, eos): the models' BOS and EOS texts.
TEMPLATES = [
    ("gemma-3-it.jinja", "<bos>", "<eos>"),
    ("qwen2.5-instruct.jinja", "", "<|im_end|>"),
    ("qwen3.jinja", "", "<|im_end|>"),
    ("llama-3.2-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "user": [m("user", "Hello")],
    "system-user": [SYSTEM, m("user", "Hello")],
    "multi-turn": [SYSTEM, m("user", "Hello"), m("assistant", "Hi there"), m("user", "Who are you?")],
    "no-system": [m("user", "Hello"), m("assistant", "Hi there"), m("user", "Who are you?")],
    "ends-with-assistant": [m("user", "Hello"), m("assistant", "Hi there")],
    "whitespace-and-markup": [
        m("system", "  Be brief.\n"),
        m("user", "\n  Hi there  \n\n"),
        m("assistant", "  Hello!  "),
        m("user", 'Tabs\tand "quotes" and {{ braces }} {% tags %} ünïcødé 日本語 🙂\n'),
    ],
    "past-reasoning": [
        m("user", "What is 2+2?"),
        m("assistant", "<think>\nAdd them.\n</think>\n\n4"),
        m("user", "And 3+3?"),
    ],
    "last-reasoning": [
        m("user", "What is 2+2?"),
        m("assistant", "<think>\nAdd them.\n</think>\n\n4"),
    ],
    "tool-results": [
        m("user", "Weather in Paris?"),
        m("assistant", "Let me check."),
        m("tool", '{"temp": 20}'),
        m("tool", "sunny"),
        m("user", "Thanks"),
    ],
    "two-systems": [SYSTEM, m("system", "Answer in French."), m("user", "Hello")],
    "roles-not-alternating": [m("user", "Hello"), m("user", "Anyone?")],
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return DAY.strftime(fmt)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    cases = []
    for name, bos, eos in TEMPLATES:
        with open(name, encoding="utf-8") as f:
            tmpl = env.from_string(f.read())
        for conv, messages in CONVERSATIONS.items():
            for gen in (False, True):
                case = {"template": name, "conversation": conv, "add_generation_prompt": gen,
                        "bos": bos, "eos": eos, "messages": messages}
                try:
                    case["want"] = tmpl.render(
                        messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=gen,
                        enable_thinking=True, date_string=DAY.strftime("%d %b %Y"),
                        datetime=DAY.strftime("%b %d %Y"))
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    with open("golden.json", "w", encoding="utf-8") as f:
        json.dump({"day": DAY.isoformat(), "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
