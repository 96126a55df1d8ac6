"""florence-tune in a notebook, cell by cell (each ``# %%`` is a cell; VS Code and Jupytext open it as one).

Fine-tune on pages held in memory, see the numbers, ask the model about a page. As written it uses the
embedded tiny model, so it runs on a laptop CPU in under a minute; for real work, set MODEL to
"florence-community/Florence-2-base" and ROWS to your own pages and questions.
"""

# %% The data: a list of dicts, each with an image (a PIL image, a path or bytes), a question and its answers
from PIL import Image

import florence_tune

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}
ROWS = [{"image": Image.new("RGB", (96, 128), rgb), "question": "What colour is the page?", "answers": [name]}
        for _ in range(8) for name, rgb in COLOURS.items()]
MODEL = "tiny"

# %% Fine-tune: the same settings as `florence-tune train`, flag names with underscores
summary = florence_tune.train(dataset=ROWS, model=MODEL, output_dir="runs/notebook", max_steps=30, batch_size=6,
                              lr=2e-3, num_beams=1, max_new_tokens=4, report_to="none", overwrite=True)
print(f"ANLS before {summary['anls_before']:.3f}, after {summary['anls_after']:.3f}")

# %% Ask the fine-tuned model about a page
model = florence_tune.load("runs/notebook", num_beams=1, max_new_tokens=4)
page = Image.new("RGB", (96, 128), COLOURS["blue"])
print(model.ask(page, "What colour is the page?"))
print(model.ask([page, ROWS[0]["image"]], ["What colour is the page?"] * 2))  # lists give lists, batched
