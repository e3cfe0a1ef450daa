"""The HTTP API's OpenAPI document: each body as JSON or a multipart form, the run spec's rules
across fields (if/then), bounds renamed to JSON Schema's words; made anew on each request, so
its segmenter and model lists follow the weights this service has."""

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from core.service.api.bodies import (PHOTO_TYPES, EmbedForm, EmbedJson, ReplaceForm, ReplaceJson,
                                     SegmentByEmbedding, SegmentBySource, SegmentForm, inpaint_models,
                                     segmenters)
from core.service.api.parse import file_fields, object_fields
from core.spec import KINDS


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def request_doc(json_models: tuple[type[BaseModel], ...], form_model: type[BaseModel]) -> dict:
    """openapi_extra: the body is JSON (one of `json_models`) or multipart/form-data (`form_model`:
    its bytes fields are file parts, its object fields JSON text)."""
    json_schema = _ref(json_models[0]) if len(json_models) == 1 else {"oneOf": [_ref(m) for m in json_models]}
    encoding = {name: {"contentType": "application/json"} for name in object_fields(form_model)}
    encoding.update({name: {"contentType": PHOTO_TYPES} for name in file_fields(form_model)})
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": _ref(form_model), "encoding": encoding}}}}


_BODIES = (EmbedJson, EmbedForm, SegmentBySource, SegmentByEmbedding, SegmentForm, ReplaceJson,
           ReplaceForm)


def _fix_bounds(node: Any) -> None:
    """pydantic writes a constraint of an annotated custom type as "ge"/"le"/"gt"/"lt" where JSON
    Schema says minimum/maximum/exclusiveMinimum/exclusiveMaximum: rename them, everywhere."""
    names = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for old, new in names.items():
                if old in node:
                    node[new] = node.pop(old)
        for v in node.values():
            _fix_bounds(v)
    elif isinstance(node, list):
        for v in node:
            _fix_bounds(v)


def _spec_rules(comps: dict) -> None:
    """The run spec's rules across fields, stated in its schema: a Stable Diffusion background
    needs `generation` (its prompt), every other background has none; over the API the
    background is never an image file and generation.model is a registry name; a click-based
    subject (no mask uploaded: always in JSON) needs clicks or a box and a segmenter."""
    spec = comps["RunSpec"]
    def background(sd: bool) -> dict:
        kinds = ["sd"] if sd else [k for k in KINDS if k not in ("sd", "image")]
        short = "^sd$" if sd else "^(transparent|color:|blur)"
        return {"anyOf": [{"type": "string", "pattern": short},
                          {"type": "object", "properties": {"kind": {"enum": kinds}}}]}
    spec["properties"]["background"] = {"anyOf": [_ref_name("Background"), {
        "type": "string", "description": "short form: sd, transparent, color:#RRGGBB or blur[:RADIUS]",
        "pattern": "^(sd|transparent|color:#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})|blur(:[0-9]{1,3}(\\.[0-9]{1,3})?)?)$"}]}
    spec.update({"if": {"properties": {"background": background(True)}},
                 "then": {"required": ["generation"], "properties": {"generation": _ref_name("Generation")}},
                 "else": {"properties": {"generation": {"type": "null"}}}})
    comps["Background"]["properties"]["kind"]["enum"] = [k for k in KINDS if k != "image"]
    comps["Background"]["properties"].pop("path", None)
    comps["Generation"]["properties"]["model"]["enum"] = inpaint_models()
    # clicks or a box; clicks alone need one on the subject (label 1, the default)
    prompts = {"if": {"properties": {"box": {"type": "null"}}},
               "then": {"required": ["clicks"], "properties": {"clicks": {
                   "type": "array", "minItems": 1,
                   "contains": {"type": "object", "properties": {"label": {"const": 1}}}}}}}
    comps["SegmentRequest"].update(prompts)
    subject = {"type": "object", "properties": {"subject": {
        "type": "object", "if": {"properties": {"auto": {"const": True}}, "required": ["auto"]},
        "then": {"properties": {"segmenter": {"anyOf": [{"type": "null"},
                                                        {"type": "string", "enum": segmenters()}]}}},
        "else": {"required": ["segmenter"], "properties": {"segmenter": {"type": "string", "enum": segmenters()}},
                 **prompts}}}, "required": ["subject"]}
    comps["ReplaceJson"]["properties"]["spec"] = {"allOf": [_ref_name("RunSpec"), subject]}
    # A multipart form refers to copies without the if/then rules (the service applies the same
    # rules; schema tools, schemathesis 4.32 among them, fail on conditions in a form that has a
    # file part). A form without `mask` needs a subject like the JSON body's.
    for form, field, name in (("ReplaceForm", "spec", "RunSpec"), ("SegmentForm", "request", "SegmentRequest")):
        plain = {k: v for k, v in comps[name].items() if k not in ("if", "then", "else")}
        plain["title"] = name + "Form"
        plain["description"] = (comps[name].get("description", "") + " In a form, the same rules "
                                "apply as in the JSON body's " + name + ".").strip()
        comps[name + "Form"] = plain
        comps[form]["properties"][field] = {**_ref_name(name + "Form"),
                                            "description": "JSON text (content type application/json)"}


def _ref_name(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def document(app: FastAPI) -> dict:
    """The document, made anew on each request (a few ms): its segmenter list follows the weights
    this service has now."""
    from fastapi.openapi.utils import get_openapi
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in _BODIES:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(js.pop("$defs", {}))
        comps[model.__name__] = js
    for name in ("EmbedForm", "SegmentForm", "ReplaceForm"):
        for prop in comps[name]["properties"].values():
            branches = prop.pop("anyOf", None)
            if branches:
                prop.update(next(b for b in branches if b.get("type") != "null"))
                if prop.get("default", 0) is None:
                    del prop["default"]
    comps.pop("HTTPValidationError", None)
    comps.pop("ValidationError", None)
    _spec_rules(comps)
    _fix_bounds(schema)
    return schema
