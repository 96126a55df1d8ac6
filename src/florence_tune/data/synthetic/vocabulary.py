"""The invented words and values printed on synthetic documents: names, companies, items, dates, money.

Every value comes from a ``random.Random`` the caller passes in, so documents stay deterministic.
"""

from __future__ import annotations

import random

# --- invented vocabulary ------------------------------------------------------------------------

FIRST_NAMES = (
    "Alvie",
    "Brannoc",
    "Corisande",
    "Dellan",
    "Emmeline",
    "Fenwick",
    "Galia",
    "Hollis",
    "Isaura",
    "Jorund",
    "Kestra",
    "Lowen",
    "Marisol",
    "Nerys",
    "Orrin",
    "Perrin",
    "Quilla",
    "Rowenna",
    "Saoirse",
    "Tamsin",
    "Ulric",
    "Veda",
    "Wrenna",
    "Yestin",
    "Zarek",
)
LAST_NAMES = (
    "Ambleworth",
    "Brackenridge",
    "Colvane",
    "Dunstray",
    "Ellerby",
    "Farrowdale",
    "Greyholt",
    "Hesketh",
    "Ivelle",
    "Jessamy",
    "Kettleby",
    "Lorimer",
    "Marchbank",
    "Northey",
    "Oakhurst",
    "Pellow",
    "Quarrington",
    "Ravensdale",
    "Selwick",
    "Tremayne",
    "Underhay",
    "Vantreight",
)
COMPANY_WORDS = (
    "Amberlight",
    "Bluefen",
    "Copperleaf",
    "Dovecote",
    "Emberline",
    "Foxmoor",
    "Glasswing",
    "Hazelmere",
    "Ironvale",
    "Juniper",
    "Kestrel",
    "Lanternfield",
    "Mossgate",
    "Nimbleway",
    "Oriel",
    "Pinecrest",
    "Quillstone",
    "Rookwood",
    "Saltmarsh",
    "Thistledown",
    "Wickham",
)
COMPANY_KINDS = (
    "Trading",
    "Supply",
    "Works",
    "Goods",
    "Market",
    "Studio",
    "Labs",
    "Hardware",
    "Bakery",
    "Outfitters",
    "Provisions",
    "Printing",
)
STREETS = (
    "Harrow Lane",
    "Quillon Street",
    "Mossbank Road",
    "Tiller Avenue",
    "Brackwater Way",
    "Ferrow Court",
    "Lindle Row",
    "Copse Hill",
    "Marram Walk",
)
CITIES = (
    "Eastmere",
    "Dunhollow",
    "Brightwell",
    "Ostridge",
    "Wrenford",
    "Calderby",
    "Fallowmouth",
    "Hexley",
    "Pennock",
)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
INVOICE_ITEMS = (
    "Paper reams",
    "Toner cartridge",
    "Desk lamp",
    "Cable set",
    "Consulting hours",
    "Delivery",
    "Shelf brackets",
    "Label rolls",
    "Storage boxes",
    "Repair service",
    "Site visit",
    "Software seat",
)
RECEIPT_ITEMS = (
    "Coffee",
    "Bagel",
    "Milk 1L",
    "Apples",
    "Bread",
    "Batteries",
    "Notebook",
    "Pens",
    "Soap",
    "Tea box",
    "Rice 2kg",
    "Honey",
    "Lemons",
    "Matches",
)
FORM_TITLES = ("Registration Form", "Application Form", "Membership Form", "Service Request Form")
FORM_OPTIONS = ("New", "Renewal", "Transfer", "Update", "Cancel")
# (title, header row, row labels) for the table layout.
TABLE_KINDS = (
    (
        "Quarterly Sales by Region",
        ("Region", "Q1", "Q2", "Q3", "Q4"),
        ("North", "South", "East", "West", "Central", "Coast", "Uplands", "Islands", "Metro"),
    ),
    (
        "Stock Count Summary",
        ("Item", "Jan", "Feb", "Mar"),
        ("Bolts", "Hinges", "Brackets", "Washers", "Clamps", "Rivets", "Springs", "Gaskets", "Pins"),
    ),
    (
        "Weekly Visitor Log",
        ("Site", "Mon", "Tue", "Wed", "Thu"),
        ("Library", "Museum", "Gallery", "Garden", "Archive", "Harbour", "Tower", "Market", "Mill"),
    ),
)

# --- invented values ----------------------------------------------------------------------------


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def company_name(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)}"


def street_line(rng: random.Random) -> str:
    return f"{rng.randint(1, 240)} {rng.choice(STREETS)}"


def date_text(rng: random.Random) -> str:
    # Day <= 28 keeps every date valid without calendar arithmetic.
    year, month, day = rng.randint(2015, 2024), rng.randint(1, 12), rng.randint(1, 28)
    if rng.random() < 0.5:
        return f"{month:02d}/{day:02d}/{year}"
    return f"{MONTHS[month - 1]} {day}, {year}"


def money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def document_number(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.randint(10000, 99999)}"


def line_items(rng: random.Random, names: tuple[str, ...], count: int, max_unit_cents: int):
    """``count`` distinct (name, quantity, unit price in cents) rows."""
    return [(name, rng.randint(1, 9), rng.randint(99, max_unit_cents)) for name in rng.sample(names, count)]
