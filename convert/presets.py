"""Label sets of the LightNER paper's datasets, and reading the label set a user gives the converter.

A DeepKE checkpoint records neither its entity types nor their label words: they lived in the training script's
mapping (`{"loc": "<<location>>", ...}`), whose order fixes the type indices. The presets below are the reference's
mappings for its four datasets, in its order, with the type names spelled as in the datasets' tag columns
(`B-Restaurant_Name` is `Restaurant_Name`) so that a converted adapter predicts the tags its data uses.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightner.configuration_lightner import default_label_words

# Type name -> label words, in the reference's (index) order.
DEEPKE_PRESETS: dict[str, dict[str, str]] = {
    "conll2003": {
        "LOC": "location",
        "PER": "person",
        "ORG": "organization",
        "MISC": "others",
    },
    "mit-movie": {
        "GENRE": "genre",
        "ACTOR": "actor",
        "YEAR": "year",
        "TITLE": "title",
        "RATING": "rating",
        "RATINGS_AVERAGE": "ratings average",
        "DIRECTOR": "director",
        "PLOT": "plot",
        "CHARACTER": "character",
        "SONG": "song",
        "REVIEW": "review",
        "TRAILER": "trailer",
    },
    "mit-restaurant": {
        "Location": "location",
        "Cuisine": "cuisine",
        "Amenity": "amenity",
        "Restaurant_Name": "restaurant name",
        "Rating": "rating",
        "Dish": "dish",
        "Hours": "hours",
        "Price": "price",
    },
    "atis": {
        "depart_date.day_number": "depart date day number",
        "arrive_date.day_name": "arrive date day name",
        "airline_name": "airline name",
        "depart_date.year": "depart date year",
        "flight_mod": "flight mod",
        "return_date.day_name": "return date day name",
        "toloc.city_name": "toloc city name",
        "return_date.day_number": "return date day number",
        "time_relative": "time relative",
        "city_name": "city name",
        "state_code": "state code",
        "transport_type": "transport type",
        "class_type": "class type",
        "days_code": "days code",
        "toloc.country_name": "toloc country name",
        "arrive_date.today_relative": "arrive date today relative",
        "round_trip": "round trip",
        "toloc.state_name": "toloc state name",
        "aircraft_code": "aircraft code",
        "arrive_date.month_name": "arrive date month name",
        "depart_date.today_relative": "depart date today relative",
        "depart_time.start_time": "depart time start time",
        "compartment": "compartment",
        "day_number": "day number",
        "depart_date.date_relative": "depart date date relative",
        "arrive_date.day_number": "arrive date day number",
        "depart_time.time": "depart time time",
        "fare_amount": "fare amount",
        "depart_date.month_name": "depart date month name",
        "period_of_day": "period of day",
        "cost_relative": "cost relative",
        "fromloc.airport_name": "fromloc airport name",
        "fare_basis_code": "fare basis code",
        "arrive_time.start_time": "arrive time start time",
        "stoploc.airport_name": "stoploc airport name",
        "time": "time",
        "depart_time.time_relative": "depart time time relative",
        "return_time.period_of_day": "return time period of day",
        "depart_time.period_of_day": "depart time period of day",
        "economy": "economy",
        "mod": "mod",
        "stoploc.airport_code": "stoploc airport code",
        "stoploc.state_code": "stoploc state code",
        "arrive_time.end_time": "arrive time end time",
        "state_name": "state name",
        "airport_name": "airport name",
        "depart_date.day_name": "depart date day name",
        "fromloc.state_name": "fromloc state name",
        "arrive_time.time_relative": "arrive time time relative",
        "today_relative": "today relative",
        "day_name": "day name",
        "flight_stop": "flight stop",
        "month_name": "month name",
        "fromloc.city_name": "fromloc city name",
        "meal": "meal",
        "arrive_time.period_of_day": "arrive time period of day",
        "return_time.period_mod": "return time period mod",
        "toloc.airport_code": "toloc airport code",
        "airport_code": "airport code",
        "restriction_code": "restriction code",
        "flight_time": "flight time",
        "airline_code": "airline code",
        "depart_time.end_time": "depart time end time",
        "flight_days": "flight days",
        "booking_class": "booking class",
        "flight_number": "flight number",
        "or": "or",
        "fromloc.airport_code": "fromloc airport code",
        "meal_description": "meal description",
        "return_date.date_relative": "return date date relative",
        "return_date.month_name": "return date month name",
        "arrive_date.date_relative": "arrive date date relative",
        "return_date.today_relative": "return date today relative",
        "arrive_time.period_mod": "arrive time period mod",
        "depart_time.period_mod": "depart time period mod",
        "meal_code": "meal code",
        "flight": "flight",
        "toloc.airport_name": "toloc airport name",
        "stoploc.city_name": "stoploc city name",
        "connect": "connect",
        "arrive_time.time": "arrive time time",
        "toloc.state_code": "toloc state code",
        "fromloc.state_code": "fromloc state code",
    },
}


def _preset_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_PRESET_ALIASES = {_preset_key(name): name for name in DEEPKE_PRESETS}


def strip_label_word_brackets(words: str) -> str:
    """`<<ratings average>>` -> `ratings average`: the reference wraps label words in `<<` `>>`, plain words pass."""
    words = words.strip()
    if words.startswith("<<") and words.endswith(">>"):
        words = words[2:-2]
    return words.strip()


def _label_map_from_data(data, source: str) -> dict[str, str]:
    """A `{type: label words}` object, or a list of type names whose label words the model derives itself."""
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return {name: default_label_words(name) for name in data}
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"{source}: expected an object mapping each entity type to its label words (e.g. "
            '{"loc": "<<location>>", "per": "<<person>>"}) or a list of type names'
        )
    label_map = {}
    for name, words in data.items():
        if not isinstance(words, str) or not strip_label_word_brackets(words):
            raise ValueError(f"{source}: the label words of type {name!r} must be a non-empty string, got {words!r}")
        label_map[str(name)] = strip_label_word_brackets(words)
    return label_map


def _parse_text(text: str, source: str, yaml_allowed: bool):
    if yaml_allowed:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{source}: reading YAML needs PyYAML (`pip install pyyaml`); or give JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{source}: not valid YAML: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not valid JSON: {error}") from None


def load_label_map(spec: str) -> tuple[dict[str, str], str]:
    """The label set `spec` names, as `({type: label words} in index order, a description for the report)`.

    `spec` is a preset (`conll2003`, `mit-movie`, `mit-restaurant`, `atis`), a `.json`/`.yaml`/`.yml` file, or an
    inline JSON object. Label words may keep DeepKE's `<<...>>` brackets.
    """
    preset = _PRESET_ALIASES.get(_preset_key(spec))
    if preset is not None:
        return dict(DEEPKE_PRESETS[preset]), f"preset {preset}"
    path = Path(spec)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        data = _parse_text(text, str(path), yaml_allowed=path.suffix.lower() in (".yaml", ".yml"))
        return _label_map_from_data(data, str(path)), f"file {path}"
    if spec.lstrip().startswith(("{", "[")):
        return _label_map_from_data(_parse_text(spec, "--labels", yaml_allowed=False), "--labels"), "inline mapping"
    raise ValueError(
        f"--labels {spec!r} is neither a preset ({', '.join(DEEPKE_PRESETS)}), an existing JSON/YAML file, nor an "
        "inline JSON object"
    )


__all__ = ["DEEPKE_PRESETS", "load_label_map", "strip_label_word_brackets"]
