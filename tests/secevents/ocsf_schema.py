"""A validator for OCSF events against the schema's own definitions vendored in tests/secevents/ocsf/.

It resolves classes and objects the way the OCSF compiler does (extends, $include'd profiles, enum merging)
and checks: required attributes, no undefined attributes, attribute types (incl. regex/range of the data
types), arrays, enum values, sibling captions, class/category/type uid arithmetic, at_least_one constraints,
and that profile attributes are only used when the profile is declared in metadata.profiles.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).parent / "ocsf"


def _load(rel: str) -> dict | None:
    p = ROOT / rel
    return json.loads(p.read_text()) if p.exists() else None


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k == "enum" and "enum" in out:
            out["enum"] = {**out["enum"], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


class Schema:
    def __init__(self) -> None:
        self.dictionary = _load("dictionary.json")["attributes"]
        self.types = _load("dictionary.json")["types"]["attributes"]
        self.categories = {name: c for name, c in _load("categories.json")["attributes"].items()}
        self.classes = {}
        for p in (ROOT / "events").rglob("*.json"):
            d = json.loads(p.read_text())
            self.classes[d["name"]] = d
        self.objects = {}
        for p in (ROOT / "objects").glob("*.json"):
            d = json.loads(p.read_text())
            self.objects[p.stem] = d
            self.objects.setdefault(d["name"], d)

    def _resolve(self, defn: dict, parent: dict | None) -> tuple[dict, dict]:
        attrs: dict = copy.deepcopy(parent[0]) if parent else {}
        constraints: dict = copy.deepcopy(parent[1]) if parent else {}
        own = dict(defn.get("attributes", {}))
        for inc in own.pop("$include", []):
            prof = _load(inc)
            if prof is None:
                continue  # not vendored: its attributes stay undefined (rejected if used)
            for name, a in prof["attributes"].items():
                merged = _merge(attrs.get(name, {}), a)
                merged.setdefault("_profile", prof["name"])
                attrs[name] = merged
        for name, a in own.items():
            merged = _merge(attrs.get(name, {}), a)
            if "profile" in a and a["profile"] is None:
                merged.pop("_profile", None)
            attrs[name] = merged
        constraints.update(defn.get("constraints", {}))
        return attrs, constraints

    @lru_cache(maxsize=None)
    def cls(self, name: str) -> tuple[dict, dict]:
        d = self.classes[name]
        parent = self.cls(d["extends"]) if d.get("extends") else None
        return self._resolve(d, parent)

    @lru_cache(maxsize=None)
    def obj(self, name: str) -> tuple[dict, dict]:
        d = self.objects[name]
        ext = d.get("extends")
        parent = self.obj(ext) if ext and ext != "object" else None
        return self._resolve(d, parent)

    def class_by_uid(self, class_uid: int) -> tuple[str, dict, int]:
        for name, d in self.classes.items():
            if "uid" not in d:
                continue
            cat = self._category_of(name)
            if cat is not None and cat["uid"] * 1000 + d["uid"] == class_uid:
                return name, cat, d["uid"]
        raise KeyError(class_uid)

    def _category_of(self, name: str) -> dict | None:
        d = self.classes[name]
        while d is not None:
            if d.get("category") in self.categories:
                return self.categories[d["category"]]
            d = self.classes.get(d.get("extends", ""))
        return None

    # ------------------------------------------------------------------ validation
    def validate(self, event: dict) -> tuple[list[str], list[str]]:
        """Returns (errors, warnings); warnings list missing `recommended` attributes."""
        errors: list[str] = []
        warnings: list[str] = []
        try:
            cname, cat, _ = self.class_by_uid(event.get("class_uid"))
        except KeyError:
            return [f"class_uid {event.get('class_uid')!r} is not a vendored class"], []
        attrs, constraints = copy.deepcopy(self.cls(cname))
        # As the OCSF compiler does: a concrete class narrows the base event's uid enums to its own values.
        attrs["category_uid"]["enum"] = {str(cat["uid"]): {"caption": cat["caption"]}}
        attrs["class_uid"]["enum"] = {str(event.get("class_uid")): {"caption": self.classes[cname]["caption"]}}
        profiles = set((event.get("metadata") or {}).get("profiles") or [])
        self._check_attrs(event, attrs, constraints, profiles, "", errors, warnings)
        # Classification arithmetic and captions.
        act = event.get("activity_id")
        if event.get("category_uid") != cat["uid"]:
            errors.append(f"category_uid {event.get('category_uid')} != {cat['uid']} for class {cname}")
        if event.get("type_uid") != event.get("class_uid", 0) * 100 + (act or 0):
            errors.append("type_uid != class_uid * 100 + activity_id")
        if "category_name" in event and event["category_name"] != cat["caption"]:
            errors.append(f"category_name {event['category_name']!r} != {cat['caption']!r}")
        caption = self.classes[cname]["caption"]
        if "class_name" in event and event["class_name"] != caption:
            errors.append(f"class_name {event['class_name']!r} != {caption!r}")
        act_caption = attrs["activity_id"].get("enum", {}).get(str(act), {}).get("caption")
        if "type_name" in event and event["type_name"] != f"{caption}: {act_caption}":
            errors.append(f"type_name {event['type_name']!r} != {caption + ': ' + str(act_caption)!r}")
        for p in profiles:
            if p != "security_control":
                continue
            for name, a in attrs.items():
                if a.get("_profile") == p and a.get("requirement") == "required" and name not in event:
                    errors.append(f"profile {p}: required attribute {name} missing")
        return errors, warnings

    def _check_attrs(self, value: dict, attrs: dict, constraints: dict, profiles: set[str], path: str,
                     errors: list[str], warnings: list[str]) -> None:
        for name, a in attrs.items():
            gated = a.get("_profile")
            if gated and gated not in profiles:
                if name in value:
                    errors.append(f"{path}{name}: belongs to profile {gated!r}, not declared in metadata.profiles")
                continue
            if name not in value:
                if a.get("requirement") == "required":
                    errors.append(f"{path}{name}: required attribute missing")
                elif a.get("requirement") == "recommended":
                    warnings.append(f"{path}{name}")
        for name, v in value.items():
            if name not in attrs:
                errors.append(f"{path}{name}: not an attribute of this class/object")
                continue
            self._check_value(name, attrs[name], v, value, profiles, f"{path}{name}", errors, warnings)
        for group in constraints.get("at_least_one", []) and [constraints["at_least_one"]]:
            if not any(k in value for k in group):
                errors.append(f"{path or '<event>'}: needs at least one of {group}")

    def _check_value(self, name: str, adef: dict, v, parent: dict, profiles: set[str], path: str,
                     errors: list[str], warnings: list[str]) -> None:
        d = _merge(self.dictionary.get(name, {}), adef)
        if name not in self.dictionary:
            errors.append(f"{path}: attribute not in the vendored dictionary")
            return
        typ = d.get("type")
        if d.get("is_array"):
            if not isinstance(v, list):
                errors.append(f"{path}: expected an array of {typ}")
                return
            for i, item in enumerate(v):
                self._check_one(name, d, typ, item, parent, profiles, f"{path}[{i}]", errors, warnings)
        else:
            self._check_one(name, d, typ, v, parent, profiles, path, errors, warnings)

    def _check_one(self, name, d, typ, v, parent, profiles, path, errors, warnings) -> None:
        if typ in self.types:
            err = self._check_primitive(typ, v)
            if err:
                errors.append(f"{path}: {err}")
                return
        elif typ == "object":
            if not isinstance(v, dict):
                errors.append(f"{path}: expected an object")
            return
        else:
            if not isinstance(v, dict):
                errors.append(f"{path}: expected a {typ} object")
                return
            if typ not in self.objects:
                errors.append(f"{path}: object type {typ} not vendored")
                return
            attrs, constraints = self.obj(typ)
            self._check_attrs(v, attrs, constraints, profiles, f"{path}.", errors, warnings)
            return
        enum = d.get("enum")
        if enum is not None:
            if str(v) not in enum:
                errors.append(f"{path}: {v!r} is not one of {sorted(enum)}")
                return
            sib = d.get("sibling")
            if sib and sib in parent and str(v) != "99" and parent[sib] != enum[str(v)]["caption"]:
                errors.append(f"{path}: sibling {sib}={parent[sib]!r} != caption {enum[str(v)]['caption']!r}")

    def _check_primitive(self, typ: str, v) -> str | None:
        t = self.types[typ]
        base = t.get("type", typ)
        if typ == "json_t":
            return None
        checks = {
            "string_t": lambda x: isinstance(x, str),
            "integer_t": lambda x: isinstance(x, int) and not isinstance(x, bool) and -2**31 <= x < 2**31,
            "long_t": lambda x: isinstance(x, int) and not isinstance(x, bool) and -2**63 <= x < 2**63,
            "float_t": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
            "boolean_t": lambda x: isinstance(x, bool),
        }
        if base not in checks:
            base = self.types[base].get("type", base)
        if not checks[base](v):
            return f"{v!r} is not a valid {typ} ({base})"
        if "regex" in t and not re.search(t["regex"], v):
            return f"{v!r} does not match the {typ} pattern"
        if "range" in t and not (t["range"][0] <= v <= t["range"][1]):
            return f"{v!r} outside {typ} range {t['range']}"
        if "max_len" in t and len(v) > t["max_len"]:
            return f"{v!r} longer than {t['max_len']}"
        return None


SCHEMA = Schema()
