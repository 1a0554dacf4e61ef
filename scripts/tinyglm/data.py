"""The conversations the tiny model trains and is evaluated on: held-out entities, ten small tools, and
agentic turns built from them. Pure Python, seeded: the same rng gives the same data."""

from __future__ import annotations

import json
import random
import zlib


# --------------------------------------------------------------------------------------------------
# Entities. Every generated string is assigned to the training or the held-out split by a hash, so
# evaluation can use values the model has never seen.
# --------------------------------------------------------------------------------------------------
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "", "n", "r", "l", "s", "m", "k"]
CONDITIONS = ["Sunny", "Cloudy", "Rain", "Snow", "Windy", "Fog", "Storm", "Clear"]
STATUSES = ["Shipped", "Pending", "Delivered", "Packed", "Delayed"]
CUISINES = ["italian", "thai", "mexican", "indian", "japanese"]
UNITS = ["celsius", "fahrenheit"]
WORD_SUFFIX = ["Park", "Lamp", "Party", "Review", "Break", "Plan", "Trip", "Notes", "Meeting", "Call"]


def split_of(text: str) -> str:
    """'eval' for about one string in eight, else 'train' (deterministic)."""
    return "eval" if zlib.crc32(text.encode()) % 8 == 0 else "train"


class Entities:
    """Random names, symbols and numbers restricted to one split."""

    def __init__(self, rng: random.Random, split: str):
        self.rng = rng
        self.split = split

    def _pick(self, make):
        for _ in range(200):
            s = make()
            if split_of(s) == self.split:
                return s
        return s

    def _word(self):
        r = self.rng
        w = "".join(r.choice(ONSETS) + r.choice(VOWELS) + r.choice(CODAS) for _ in range(r.choice([2, 2, 3])))
        return w.capitalize()

    def word(self):
        return self._pick(self._word)

    def place(self):
        return self._pick(lambda: self._word() if self.rng.random() < 0.75 else self._word() + " " + self._word())

    def person(self):
        return self._pick(lambda: self._word() + " " + self._word())

    def title(self):
        return self._pick(lambda: self._word() + " " + self.rng.choice(WORD_SUFFIX))

    def symbol(self, n=None):
        n = n or self.rng.choice([3, 4])
        return self._pick(lambda: "".join(self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n)))

    def integer(self, lo=1, hi=9999):
        return self.rng.randint(lo, hi)

    def decimal(self):
        whole = self.rng.randint(1, 999)
        frac = self.rng.randint(1, 99)
        return float(f"{whole}.{frac:02d}") if frac % 10 else float(f"{whole}.{frac // 10 or 5}")


# --------------------------------------------------------------------------------------------------
# Tools. Each has a short JSON schema and a sampler returning (user request, arguments, response,
# key value, answer). Argument values always appear verbatim in the user request.
# --------------------------------------------------------------------------------------------------
def fn(name, desc, props, required):
    return {"type": "function", "function": {"name": name, "description": desc,
            "parameters": {"type": "object", "properties": props, "required": required}}}


TOOLS = {
    "get_weather": fn("get_weather", "Current weather for a city",
                      {"city": {"type": "string"}, "unit": {"type": "string", "enum": UNITS}}, ["city"]),
    "get_time": fn("get_time", "Current local time", {}, []),
    "get_stock_price": fn("get_stock_price", "Latest price of a stock", {"symbol": {"type": "string"}}, ["symbol"]),
    "set_timer": fn("set_timer", "Start a named timer",
                    {"minutes": {"type": "integer"}, "label": {"type": "string"}}, ["minutes", "label"]),
    "convert_currency": fn("convert_currency", "Convert money between currencies",
                           {"amount": {"type": "number"}, "source": {"type": "string"}, "target": {"type": "string"}},
                           ["amount", "source", "target"]),
    "send_email": fn("send_email", "Send an email to a contact",
                     {"to": {"type": "string"}, "subject": {"type": "string"}, "urgent": {"type": "boolean"}},
                     ["to", "subject"]),
    "add_tags": fn("add_tags", "Tag an item",
                   {"item": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                   ["item", "tags"]),
    "create_event": fn("create_event", "Create a calendar event",
                       {"event": {"type": "object", "properties": {"title": {"type": "string"},
                                                                   "day": {"type": "integer"}}}}, ["event"]),
    "lookup_order": fn("lookup_order", "Find an order",
                       {"order_id": {"type": "integer"}, "include_items": {"type": "boolean"}}, ["order_id"]),
    "find_restaurant": fn("find_restaurant", "Find a restaurant",
                          {"city": {"type": "string"}, "cuisine": {"type": "string", "enum": CUISINES}},
                          ["city", "cuisine"]),
}
TOOL_NAMES = list(TOOLS)


def _j(d):
    return json.dumps(d, ensure_ascii=False)


def sample_call(name: str, ent: Entities):
    """Return dict(user, args, response, key, answer, intent) for one call of tool `name`."""
    r = ent.rng
    if name == "get_weather":
        city = ent.place()
        args = {"city": city}
        if r.random() < 0.4:
            args["unit"] = r.choice(UNITS)
            user = r.choice([f"What is the weather in {city} in {args['unit']}?",
                             f"Weather for {city} please, in {args['unit']}."])
        else:
            user = r.choice([f"What is the weather in {city}?", f"How is the weather in {city} today?",
                             f"Check the weather for {city}."])
        temp, cond = r.randint(-9, 39), r.choice(CONDITIONS)
        resp = {"city": city, "temp": temp, "condition": cond}
        return dict(user=user, args=args, response=_j(resp), key=str(temp),
                    answer=f"It is {temp} degrees and {cond} in {city}.", intent=f"the weather in {city}")
    if name == "get_time":
        hh, mm = r.randint(0, 23), r.randint(0, 59)
        t = f"{hh:02d}:{mm:02d}"
        user = r.choice(["What time is it?", "Tell me the current time.", "What is the time now?"])
        return dict(user=user, args={}, response=_j({"time": t}), key=t,
                    answer=f"It is {t} now.", intent="the current time")
    if name == "get_stock_price":
        sym, price = ent.symbol(), ent.decimal()
        user = r.choice([f"What is the price of {sym}?", f"How much is {sym} stock?", f"Get the stock price for {sym}."])
        return dict(user=user, args={"symbol": sym}, response=_j({"symbol": sym, "price": price}), key=str(price),
                    answer=f"{sym} trades at {price}.", intent=f"the price of {sym}")
    if name == "set_timer":
        mins, label = r.randint(1, 180), ent.title()
        user = r.choice([f"Set a timer for {mins} minutes called {label}.",
                         f"Start a {mins} minute timer named {label}."])
        tid = ent.integer(100, 9999)
        return dict(user=user, args={"minutes": mins, "label": label},
                    response=_j({"timer_id": tid, "status": "Started"}), key=str(tid),
                    answer=f"Timer {tid} is set for {mins} minutes.", intent=f"a timer of {mins} minutes")
    if name == "convert_currency":
        amt = ent.decimal() if r.random() < 0.5 else ent.integer(1, 5000)
        src, dst = ent.symbol(3), ent.symbol(3)
        user = r.choice([f"Convert {amt} {src} to {dst}.", f"How much is {amt} {src} in {dst}?"])
        res = ent.decimal()
        return dict(user=user, args={"amount": amt, "source": src, "target": dst},
                    response=_j({"result": res, "currency": dst}), key=str(res),
                    answer=f"{amt} {src} is {res} {dst}.", intent=f"converting {amt} {src} to {dst}")
    if name == "send_email":
        to, subject = ent.person(), ent.title()
        urgent = r.random() < 0.5
        args = {"to": to, "subject": subject}
        if urgent:
            args["urgent"] = True
            user = r.choice([f"Send an urgent email to {to} about {subject}.",
                             f"Email {to} with subject {subject}, it is urgent."])
        elif r.random() < 0.5:
            args["urgent"] = False
            user = f"Email {to} with subject {subject}, it is not urgent."
        else:
            user = r.choice([f"Send an email to {to} about {subject}.", f"Email {to} with subject {subject}."])
        mid = ent.integer(100, 9999)
        return dict(user=user, args=args, response=_j({"message_id": mid, "status": "Sent"}), key=str(mid),
                    answer=f"Sent to {to} as message {mid}.", intent=f"an email to {to}")
    if name == "add_tags":
        item = ent.title()
        tags = [ent.word() for _ in range(r.choice([1, 2, 2, 3]))]
        tag_text = tags[0] if len(tags) == 1 else ", ".join(tags[:-1]) + " and " + tags[-1]
        user = r.choice([f"Tag {item} with {tag_text}.", f"Add the tags {tag_text} to {item}."])
        n = ent.integer(1, 99)
        return dict(user=user, args={"item": item, "tags": tags}, response=_j({"item": item, "total_tags": n}),
                    key=str(n), answer=f"{item} now has {n} tags.", intent=f"tagging {item}")
    if name == "create_event":
        title, day = ent.title(), r.randint(1, 31)
        user = r.choice([f"Create an event {title} on day {day}.", f"Schedule {title} for day {day}."])
        eid = ent.integer(100, 9999)
        return dict(user=user, args={"event": {"title": title, "day": day}}, response=_j({"event_id": eid}),
                    key=str(eid), answer=f"Event {title} was created with id {eid}.", intent=f"an event {title}")
    if name == "lookup_order":
        oid = ent.integer(1000, 99999)
        args = {"order_id": oid}
        if r.random() < 0.4:
            args["include_items"] = True
            user = f"Look up order {oid} with its items."
        else:
            user = r.choice([f"Where is my order {oid}?", f"Check order {oid}."])
        status, eta = r.choice(STATUSES), r.randint(1, 20)
        return dict(user=user, args=args, response=_j({"order_id": oid, "status": status, "eta_days": eta}),
                    key=str(eta), answer=f"Order {oid} is {status} and arrives in {eta} days.",
                    intent=f"order {oid}")
    if name == "find_restaurant":
        city, cuisine = ent.place(), r.choice(CUISINES)
        user = r.choice([f"Find a {cuisine} restaurant in {city}.", f"Any good {cuisine} food in {city}?"])
        top, rating = ent.title(), round(r.randint(10, 50) / 10, 1)
        return dict(user=user, args={"city": city, "cuisine": cuisine},
                    response=_j({"name": top, "rating": rating}), key=top,
                    answer=f"Try {top}, rated {rating}.", intent=f"{cuisine} food in {city}")
    raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------------
GREETINGS = [("Hello!", "Hello! How can I help you today?"), ("Hi there.", "Hi! What can I do for you?"),
             ("Thanks a lot.", "You are welcome."), ("Good morning.", "Good morning! How can I help?"),
             ("Who are you?", "I am a small assistant that can use tools."),
             ("Thank you, that is all.", "Glad to help. Goodbye!")]


def tool_turn(ent: Entities, shown: list[str], thinking: bool):
    """One user request needing 1-3 calls, with the assistant's call turn, results and answer."""
    r = ent.rng
    k = r.choices([1, 2, 3], [0.6, 0.3, 0.1])[0]
    names = [r.choice(shown) for _ in range(k)]
    calls = [sample_call(n, ent) for n in names]
    user = " ".join(c["user"] for c in calls)
    think1 = f"The user asks for {' and '.join(c['intent'] for c in calls)}. I will call {', then '.join(names)}."
    think2 = "The results are in. I will answer from them."
    a1 = {"role": "assistant", "content": "",
          "tool_calls": [{"type": "function", "function": {"name": n, "arguments": c["args"]}}
                         for n, c in zip(names, calls)]}
    a2 = {"role": "assistant", "content": " ".join(c["answer"] for c in calls)}
    if thinking:
        a1["reasoning_content"] = think1
        a2["reasoning_content"] = think2
    msgs = [{"role": "user", "content": user}, a1]
    msgs += [{"role": "tool", "content": c["response"]} for c in calls]
    msgs.append(a2)
    return msgs, dict(names=names, calls=calls)


def plain_turn(ent: Entities, shown: list[str], thinking: bool, copy_weight: float):
    """A turn that needs no tool: greetings, tool listing, echo and key-value copy drills."""
    r = ent.rng
    kind = r.choices(["greet", "list", "echo", "lookup"], [1.0, 0.5, copy_weight, copy_weight])[0]
    if kind == "greet":
        user, answer = r.choice(GREETINGS)
        think = "This is small talk, no tool is needed."
    elif kind == "list":
        user = r.choice(["What tools can you use?", "Which functions do you have?"])
        answer = ("I can use " + ", ".join(shown) + ".") if shown else "I have no tools right now."
        think = "The user asks about my tools."
    elif kind == "echo":
        parts = []
        for _ in range(r.randint(2, 6)):
            parts.append(r.choice([ent.word(), ent.place(), ent.symbol(), str(ent.integer()), str(ent.decimal())]))
        text = " ".join(parts)
        user = r.choice([f"Repeat exactly: {text}", f"Say this back: {text}", f"Echo {text}"])
        answer = text
        think = "The user wants the text repeated exactly."
    else:
        n = r.randint(2, 6)
        keys = []
        while len(keys) < n:
            w = ent.word()
            if w not in keys:
                keys.append(w)
        vals = [r.choice([ent.word(), str(ent.integer()), ent.symbol(), str(ent.decimal())]) for _ in keys]
        i = r.randrange(n)
        table = ", ".join(f"{k}={v}" for k, v in zip(keys, vals))
        user = r.choice([f"Records: {table}. What is {keys[i]}?", f"Given {table}, what is the value of {keys[i]}?"])
        answer = f"{keys[i]} is {vals[i]}."
        think = f"I look up {keys[i]} in the records."
    a = {"role": "assistant", "content": answer}
    if thinking:
        a["reasoning_content"] = think
    return [{"role": "user", "content": user}, a]


def make_conversation(rng: random.Random, split: str = "train", copy_weight: float = 0.3):
    """A conversation: tools shown (0-3), 1-3 user turns, thinking on or off for the whole exchange."""
    ent = Entities(rng, split)
    n_shown = rng.choices([0, 1, 2, 3], [0.15, 0.4, 0.3, 0.15])[0]
    shown = rng.sample(TOOL_NAMES, n_shown)
    thinking = rng.random() < 0.75
    msgs = []
    if rng.random() < 0.1:
        msgs.append({"role": "system", "content": "You are a helpful assistant."})
    for _ in range(rng.choices([1, 2, 3], [0.7, 0.25, 0.05])[0]):
        if shown and rng.random() < 0.7:
            m, _ = tool_turn(ent, shown, thinking)
        else:
            m = plain_turn(ent, shown, thinking, copy_weight)
        msgs += m
    return dict(messages=msgs, tools=[TOOLS[n] for n in shown], enable_thinking=thinking)
