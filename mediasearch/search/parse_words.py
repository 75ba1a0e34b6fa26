"""The words the query parser knows, in English, French, German and Spanish (folded: lowercase, no accents)."""

from __future__ import annotations

MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan janvier janv januar janner enero",
        "february feb fevrier fev fevr februar febrero",
        "march mars marz maerz marzo",
        "april apr avril abril",
        "may mai mayo",
        "june jun juin juni junio",
        "july jul juillet juli julio",
        "august aug aout agosto",
        "september sep sept septembre septiembre setiembre",
        "october oct octobre oktober octubre",
        "november nov novembre noviembre",
        "december dec decembre dezember diciembre",
    ),
    start=1,
):
    MONTHS.update(dict.fromkeys(_names.split(), _number))

# Meteorological seasons of the northern hemisphere: (first month, number of months).
SEASONS: dict[str, int] = {}
for _first, _names in (
    (3, "spring printemps fruhling fruehling fruhjahr primavera"),
    (6, "summer ete sommer verano"),
    (9, "autumn fall automne herbst otono"),
    (12, "winter hiver invierno"),
):
    SEASONS.update(dict.fromkeys(_names.split(), _first))

# Holidays: key → (month, day, days) for fixed dates; movable ones are computed in parse_dates.
HOLIDAYS: dict[str, str] = {
    "christmas": "christmas",
    "xmas": "christmas",
    "noel": "christmas",
    "weihnachten": "christmas",
    "navidad": "christmas",
    "navidades": "christmas",
    "christmas eve": "christmas",
    "heiligabend": "christmas",
    "new year's eve": "nye",
    "new years eve": "nye",
    "nye": "nye",
    "silvester": "nye",
    "nochevieja": "nye",
    "reveillon": "nye",
    "saint sylvestre": "nye",
    "la saint sylvestre": "nye",
    "new year": "newyear",
    "new year's day": "newyear",
    "new years day": "newyear",
    "nouvel an": "newyear",
    "le nouvel an": "newyear",
    "neujahr": "newyear",
    "ano nuevo": "newyear",
    "easter": "easter",
    "paques": "easter",
    "ostern": "easter",
    "pascua": "easter",
    "semana santa": "easter",
    "halloween": "halloween",
    "thanksgiving": "thanksgiving",
    "valentine's day": "valentine",
    "valentines day": "valentine",
    "saint valentin": "valentine",
    "la saint valentin": "valentine",
    "valentinstag": "valentine",
    "san valentin": "valentine",
    "fourth of july": "july4",
    "4th of july": "july4",
    "independence day": "july4",
    "bastille day": "july14",
    "14 juillet": "july14",
    "le 14 juillet": "july14",
}

NUMBERS: dict[str, int] = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "a couple of": 2,
    "a few": 3,
    "couple of": 2,
    "few": 3,
    "un": 1,
    "une": 1,
    "deux": 2,
    "trois": 3,
    "quatre": 4,
    "cinq": 5,
    "sept": 7,
    "huit": 8,
    "neuf": 9,
    "dix": 10,
    "quelques": 3,
    "ein": 1,
    "eine": 1,
    "einem": 1,
    "einer": 1,
    "zwei": 2,
    "drei": 3,
    "vier": 4,
    "funf": 5,
    "fuenf": 5,
    "sechs": 6,
    "sieben": 7,
    "acht": 8,
    "neun": 9,
    "zehn": 10,
    "einigen": 3,
    "ein paar": 3,
    "uno": 1,
    "una": 1,
    "dos": 2,
    "tres": 3,
    "cuatro": 4,
    "cinco": 5,
    "seis": 6,
    "siete": 7,
    "ocho": 8,
    "nueve": 9,
    "diez": 10,
    "unos": 3,
    "unas": 3,
    "unos pocos": 3,
}

UNITS: dict[str, str] = {}
for _unit, _names in (
    ("day", "day days jour jours tag tage tagen dia dias"),
    ("week", "week weeks semaine semaines woche wochen semana semanas"),
    ("month", "month months mois monat monate monaten mes meses"),
    ("year", "year years an ans annee annees jahr jahre jahren ano anos"),
):
    UNITS.update(dict.fromkeys(_names.split(), _unit))

# Media kinds: word → kind; the word is also kept in the CLIP text where it says what the picture shows.
KIND_WORDS: dict[str, str] = {
    **dict.fromkeys("video videos vid vids clip clips movie movies footage videoclip films film".split(), "video"),
    **dict.fromkeys(
        "photo photos picture pictures pic pics pix image images foto fotos bilder bild imagenes "
        "imagen photographs photograph snapshots snaps".split(),
        "image",
    ),
    **dict.fromkeys("screenshot screenshots capture captures bildschirmfoto bildschirmfotos".split(), "image"),
}
KIND_KEPT = frozenset({"screenshot", "screenshots", "bildschirmfoto", "bildschirmfotos", "capture", "captures"})
# "film" is too often what a picture shows ("film camera") to be taken without a following "of".
KIND_NEEDS_OF = frozenset({"film", "films", "clip", "clips", "capture", "captures", "bild", "image", "imagen"})
KIND_OF = frozenset({"of", "from", "de", "des", "du", "von", "vom", "aus", "del"})

SORT_PHRASES: dict[str, str] = {
    "latest": "date",
    "latest first": "date",
    "newest": "date",
    "newest first": "date",
    "most recent": "date",
    "most recent first": "date",
    "recent first": "date",
    "les plus recentes": "date",
    "les plus recents": "date",
    "plus recentes": "date",
    "recentes d'abord": "date",
    "neueste": "date",
    "neuesten": "date",
    "neueste zuerst": "date",
    "mas recientes": "date",
    "las mas recientes": "date",
    "los mas recientes": "date",
    "oldest": "oldest",
    "oldest first": "oldest",
    "earliest": "oldest",
    "earliest first": "oldest",
    "in chronological order": "oldest",
    "chronological": "oldest",
    "chronologically": "oldest",
    "les plus anciennes": "oldest",
    "les plus anciens": "oldest",
    "plus anciennes d'abord": "oldest",
    "alteste": "oldest",
    "altesten": "oldest",
    "alteste zuerst": "oldest",
    "altesten zuerst": "oldest",
    "mas antiguas": "oldest",
    "las mas antiguas": "oldest",
    "los mas antiguos": "oldest",
    "by date": "date",
    "sorted by date": "date",
    "par date": "date",
    "nach datum": "date",
    "por fecha": "date",
}

# What introduces recognised text before a quoted string.
OCR_TRIGGERS = (
    "that says",
    "which says",
    "saying",
    "says",
    "said",
    "with the text",
    "with text",
    "with the words",
    "with the word",
    "reading",
    "that reads",
    "which reads",
    "reads",
    "written",
    "that read",
    "qui dit",
    "avec le texte",
    "avec le mot",
    "avec les mots",
    "ou il est ecrit",
    "ecrit",
    "mit dem text",
    "mit text",
    "mit der aufschrift",
    "mit aufschrift",
    "auf dem steht",
    "que dice",
    "con el texto",
    "con la palabra",
    "con las palabras",
    "que pone",
    "dice",
    "pone",
)

# Joins between people: "Alice and Bob", "avec Alice et Bob", "mit Alice und Bob", "con Alice y Bob".
PEOPLE_WITH = frozenset({"with", "avec", "mit", "con", "featuring", "feat"})
PEOPLE_AND = frozenset({"and", "&", "et", "und", "y", "e", "+"})

# What introduces a place: "in Paris", "near Nice", "à Lyon", "bei München", "cerca de Madrid".
PLACE_NEAR = (
    "near",
    "nearby",
    "close to",
    "around",
    "pres de",
    "pres d'",
    "a cote de",
    "autour de",
    "in der nahe von",
    "nahe",
    "bei",
    "cerca de",
    "cerca del",
    "alrededor de",
)
PLACE_IN = (
    "in",
    "at",
    "from",
    "to",
    "within",
    "en",
    "a",
    "au",
    "aux",
    "dans",
    "de",
    "d'",
    "du",
    "im",
    "aus",
    "nach",
    "desde",
    "del",
)

# Place names that are everyday words, taken as places only when written with a capital or when the
# library holds photos taken there ("in nice weather", "at reading", "in bath").
COMMON_WORDS = frozenset(
    "nice reading bath mobile orange split bay beach bear bed bell bridge canyon cape centre center "
    "city day deal eagle early echo energy fair fall forest garden gold golden grace hope house independence "
    "iron joy lake liberty lincoln long love march may mountain ocean paradise park peace pleasant plain "
    "pool port prairie rock rose sale sandy sea snow spring star sun sunny surprise temple tree union valley "
    "view village wall water white winter wood young home school church market station street wedding sunset "
    "party office work night dawn dusk morning evening noon holiday holidays vacation trip camp lake river".split()
)
