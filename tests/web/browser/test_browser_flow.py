"""The whole toy-world flow in a real headless Chromium against the real server, as a user clicks it:
make a concept and upload its 5 photos, edit a caption, train (loss curve, previews), stop, resume, finish,
compare two snapshots, generate "a photo of a *" with the new word, find it in the gallery with its recipe,
reuse the recipe. Each page's screenshot lands in the artifacts folder."""

from __future__ import annotations

import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from ldm.benchmark.web_server import TOY_CONCEPT

from .drive import banner, by_id, click, console_errors, until

CONCEPT = "my-star"
CAPTION = "a purple star, plain background"
MODEL = "toy-world/toy-world.safetensors"
RUN = "star"
MAX_STEPS, SAVE_EVERY = 200, 25  # stop after the first preview, then resume to the end
PROMPT = "a photo of a *"
WORD = "purple-star"  # the embeddings/ name the Compare page copies the chosen snapshot to
TRAINING = 1800.0  # hang guards for minutes of work on 2 shared cores, not speed requirements
RENDERING = 600.0

pytestmark = pytest.mark.slow  # trains the toy world twice and renders a grid: minutes on 2 CPU cores


def notice(driver) -> str:
    return banner(driver, "notice")


def test_toy_world_flow(server, browser, screenshot):
    make_concept_with_photos(server, browser, screenshot)
    edit_a_caption(server, browser)
    run = train_stop_resume_finish(server, browser, screenshot)
    compare_two_snapshots(server, browser, screenshot, run)
    find_it_in_the_library(server, browser, screenshot)
    generate_with_the_new_word(server, browser, screenshot, run)
    reuse_the_recipe(browser, screenshot)
    assert console_errors(browser) == []


def set_value(driver, element_id: str, value) -> None:
    box = by_id(driver, element_id)
    box.clear()
    box.send_keys(str(value))


def choose(driver, element_id: str, value: str) -> None:
    Select(by_id(driver, element_id)).select_by_value(value)


def make_concept_with_photos(server, browser, screenshot) -> None:
    browser.get(server.url + "/dataset")
    by_id(browser, "concept-name").send_keys(CONCEPT)
    click(browser, "concept-create")
    until(browser, lambda d: f"created concept {CONCEPT}" in notice(d), message=f"no notice for {CONCEPT}")
    assert by_id(browser, "concept-select").get_attribute("value") == CONCEPT
    photos = sorted(TOY_CONCEPT.glob("*.png"))
    assert len(photos) == 5
    by_id(browser, "upload-files").send_keys("\n".join(str(p) for p in photos))
    click(browser, "upload-button")
    until(browser, lambda d: "added 5 photos" in notice(d), message="the upload's notice")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dataset-grid figure")) == 5)
    stored = sorted((server.root / "training_data" / CONCEPT).glob("*.png"))
    assert [p.stem for p in stored] == [p.stem for p in photos]
    images = browser.find_elements(By.CSS_SELECTOR, "#dataset-grid figure img")
    until(browser, lambda d: all(d.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images))
    screenshot("flow-1-dataset")


def edit_a_caption(server, browser) -> None:
    box = by_id(browser, "caption-0")
    file = by_id(browser, "image-0").get_attribute("data-file")
    box.clear()
    box.send_keys(CAPTION)
    click(browser, "caption-save-0")
    until(browser, lambda d: f"saved the caption of {file}" in notice(d), message="the caption's notice")
    sidecar = server.root / "training_data" / CONCEPT / (file.rsplit(".", 1)[0] + ".txt")
    assert sidecar.read_text(encoding="utf-8").strip() == CAPTION
    browser.refresh()  # the page shows what the server kept, not what was typed
    until(browser, lambda d: d.find_element(By.ID, "caption-0").get_attribute("value") == CAPTION)


def run_state(driver) -> str:
    return driver.find_element(By.ID, "train-state").get_attribute("data-state") or ""


def loaded_images(driver, css: str) -> int:
    """How many images matching css have finished loading (a broken or pending image has no width)."""
    images = driver.find_elements(By.CSS_SELECTOR, css)
    return sum(1 for img in images if driver.execute_script("return arguments[0].naturalWidth", img) > 0)


def train_stop_resume_finish(server, browser, screenshot) -> str:
    browser.get(server.url + "/train")
    choose(browser, "train-model", MODEL)
    choose(browser, "train-concept", CONCEPT)
    set_value(browser, "train-name", RUN)
    set_value(browser, "train-init-word", "shape")
    set_value(browser, "train-steps", MAX_STEPS)
    set_value(browser, "train-save-every", SAVE_EVERY)
    set_value(browser, "train-preview-steps", 5)
    click(browser, "train-start")
    until(browser, lambda d: "Started" in notice(d), message="Start did not start a run")
    run = by_id(browser, "train-run-name").text
    assert run.endswith(RUN) and (server.root / "logs" / run).is_dir()
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#train-loss-chart polyline"), TRAINING, "no loss curve")
    until(browser, lambda d: loaded_images(d, "#train-previews img") > 0, TRAINING, "no preview grid")
    screenshot("flow-2-train-running")
    click(browser, "train-stop")
    until(browser, lambda d: run_state(d) == "stopped", TRAINING, "Stop did not stop the run")
    stopped_at = int(by_id(browser, "train-progress").get_attribute("value"))
    assert 0 < stopped_at < MAX_STEPS
    assert (server.root / "logs" / run / "checkpoints" / "last.ckpt").is_file()  # saved before it exited
    click(browser, "train-resume")
    until(browser, lambda d: run_state(d) in ("running", "finished"), TRAINING, "Resume did not go on")
    until(browser, lambda d: run_state(d) == "finished", TRAINING, "the resumed run did not finish")
    assert by_id(browser, "train-step").text == f"step {MAX_STEPS} of {MAX_STEPS}"
    steps = [
        int(n.split("step ")[1])
        for n in (f.text for f in browser.find_elements(By.CSS_SELECTOR, ".train-preview figcaption"))
    ]
    assert steps == sorted(steps, reverse=True) and max(steps) > stopped_at  # the history, newest first
    snapshots = browser.find_elements(By.CSS_SELECTOR, "a.train-snapshot")
    assert len(snapshots) >= MAX_STEPS // SAVE_EVERY
    screenshot("flow-3-train-finished")
    return run


def compare_two_snapshots(server, browser, screenshot, run: str) -> None:
    browser.get(server.url + "/compare")
    until(
        browser, lambda d: run in [o.get_attribute("value") for o in Select(d.find_element(By.ID, "cmp-run")).options]
    )
    choose(browser, "cmp-run", run)
    boxes = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#cmp-snapshots input[type=checkbox]"))
    step_boxes = [b for b in boxes if b.is_selected()]
    assert len(step_boxes) >= 2
    for box in step_boxes[1:-1]:  # keep the first and the last step
        box.click()
    set_value(browser, "cmp-steps", 10)
    click(browser, "cmp-run-button")
    until(browser, lambda d: d.find_element(By.ID, "cmp-result").is_displayed(), RENDERING, "no comparison grid")
    until(browser, lambda d: loaded_images(d, "#cmp-table img") == 4, message="the 2 x 2 cells did not load")
    screenshot("flow-4-compare")
    browser.find_element(By.CSS_SELECTOR, "#cmp-cell-0-1 img").click()
    set_value(browser, "cmp-use-name", WORD)
    click(browser, "cmp-use-button")
    until(browser, lambda d: "copied to embeddings/" in notice(d), message="Use did not copy the snapshot")
    assert any(p.stem == WORD for p in (server.root / "embeddings").iterdir())


def find_it_in_the_library(server, browser, screenshot) -> None:
    browser.get(server.url + "/embeddings")
    rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "#emb-library tr[data-file]") if WORD in r.text]
    assert len(rows) == 1, "the copied snapshot is not in the library"
    assert MODEL in rows[0].text  # the models it fits: the toy world's text encoder has its width
    screenshot("flow-5-embeddings")


def generate_with_the_new_word(server, browser, screenshot, run: str) -> None:
    browser.get(server.url + "/generate")
    choose(browser, "gen-model", MODEL)
    until(browser, lambda d: any(WORD in o.text for o in Select(d.find_element(By.ID, "gen-embedding")).options))
    snapshot = until(
        browser,
        lambda d: [
            o for o in Select(d.find_element(By.ID, "gen-snapshot")).options if o.get_attribute("data-run") == run
        ],
    )
    snapshot[-1].click()  # the run's final embedding
    set_value(browser, "gen-prompt", PROMPT)
    choose(browser, "gen-sampler", "ddim")
    set_value(browser, "gen-steps", 10)
    set_value(browser, "gen-cfg", 5)
    set_value(browser, "gen-seed", 7)
    click(browser, "gen-run-button")
    until(browser, lambda d: d.find_element(By.ID, "gen-status").text.startswith("done"), RENDERING, "no image")
    until(browser, lambda d: loaded_images(d, "#gallery img") == 1, message="the image is not in the gallery")
    figure = browser.find_element(By.CSS_SELECTOR, "#gallery figure")
    assert PROMPT in figure.find_element(By.CSS_SELECTOR, "figcaption").text  # its recipe, read from the file
    image_id = figure.get_attribute("data-image")
    png = server.root / "outputs" / "web" / image_id
    with Image.open(png) as image:
        assert PROMPT in str(image.text)  # the recipe travels inside the PNG
    screenshot("flow-6-generate")


def reuse_the_recipe(browser, screenshot) -> None:
    set_value(browser, "gen-prompt", "something else")
    set_value(browser, "gen-seed", 123)
    set_value(browser, "gen-steps", 3)
    browser.find_element(By.CSS_SELECTOR, "#gallery figure button.reuse").click()
    until(browser, lambda d: "recipe of" in notice(d), message="Reuse did not load the recipe")
    assert by_id(browser, "gen-prompt").get_attribute("value") == PROMPT
    assert by_id(browser, "gen-seed").get_attribute("value") == "7"
    assert by_id(browser, "gen-steps").get_attribute("value") == "10"
    assert by_id(browser, "gen-sampler").get_attribute("value") == "ddim"
    screenshot("flow-7-reuse")
