"""`mambagen app`: the page's handlers (the same library calls as the command line), and the whole page
driven in headless Chromium (Debian's package) against the running app."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")
from mambagen import app  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return app.Models(["demo"], torch.device("cpu"))


def test_generate_names_classes_and_writes_png_and_npz(models):
    png, npz, images = app.generate(models, "demo", ["heart", "time"], 2, 4.0, 1.0, 0, 1.0, 0, 64)
    assert Image.open(png).size[0] > 128 and len(images) == 4 and images[0].size == (64, 64)
    assert np.load(npz)["labels"].tolist() == [15, 15, 28, 28]
    with pytest.raises(ValueError, match="unknown class 'dragons'"):
        app.generate(models, "demo", ["dragons"], 1, 4.0, 1.0, 0, 1.0, 0, 64)
    with pytest.raises(ValueError, match="at least one class"):
        app.generate(models, "demo", [], 1, 4.0, 1.0, 0, 1.0, 0, 64)


def _editor(size=64, box=(0, 40, 64, 64), mode="RGB"):
    bg = Image.new(mode, (size, size), (200, 30, 30) if mode == "RGB" else 128)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), box)
    return {"background": bg, "layers": [layer], "composite": bg}


def test_edit_keeps_the_unpainted_rows_and_says_what_it_does(models):
    images, notice = app.edit_image(models, "demo", _editor(), "inpaint", ["country_flag"], 2, 24, 4.0, 1.0, 0, 1.0, 0, 64)
    assert len(images) == 4 and all(im.size == (64, 64) for im in images)
    original, edited = np.asarray(images[0]), np.asarray(images[2])
    assert np.array_equal(original[:32], edited[:32])             # the rows above the mask's token rows
    images, notice = app.edit_image(models, "demo", _editor(box=(20, 20, 28, 28), size=128, mode="L"), "inpaint",
                                    ["country_flag"], 1, 24, 4.0, 1.0, 0, 1.0, 0, 64)
    assert "converted to RGB" in notice and "resized to 64x64" in notice and "raster order" in notice
    with pytest.raises(ValueError, match="mask is empty"):
        app.edit_image(models, "demo", _editor(box=(0, 0, 0, 0)), "inpaint", [], 1, 24, 4.0, 1.0, 0, 1.0, 0, 64)
    with pytest.raises(ValueError, match="cannot outpaint onto a larger canvas"):
        app.edit_image(models, "demo", _editor(), "canvas", [], 1, 24, 4.0, 1.0, 0, 1.0, 0, 64)
    with pytest.raises(ValueError, match="upload an image"):
        app.edit_image(models, "demo", None, "inpaint", [], 1, 24, 4.0, 1.0, 0, 1.0, 0, 64)
    assert "aim" in app.describe("demo", models) and "parameters" in app.describe("demo", models)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="Debian's chromium and chromium-driver not installed")
def test_the_page_in_headless_chromium(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mambagen", "app", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2200"):
            options.add_argument(flag)
        from selenium.webdriver.chrome.service import Service
        browser = webdriver.Chrome(service=Service(DRIVER), options=options)
        wait = WebDriverWait(browser, 120)
        try:
            browser.get(url)
            wait.until(EC.element_to_be_clickable((By.ID, "generate"))).click()
            grid = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#grid img"))
            src = grid.get_attribute("src")
            with urllib.request.urlopen(src) as r:
                (tmp_path / "grid.png").write_bytes(r.read())
            assert Image.open(tmp_path / "grid.png").size[0] > 256            # 2 classes x 4 images, scale 2
            browser.save_screenshot(str(tmp_path / "generate.png"))

            browser.find_element(By.XPATH, "//button[contains(., 'Edit') and @role='tab']").click()
            # the first generated sample (the grid: 2 px padding, scaled 2x) is the image to edit
            Image.open(tmp_path / "grid.png").convert("RGB").crop((4, 4, 132, 132)).resize((64, 64)) \
                .save(tmp_path / "in.png")
            upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#editor input[type=file]"))
            upload.send_keys(str(tmp_path / "in.png"))
            canvas = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#editor canvas"))
            time.sleep(2)
            browser.find_element(By.CSS_SELECTOR, "#editor button[aria-label='Brush']").click()
            # the 64 px image sits zoomed in the middle of the canvas: paint a band over its lower half
            side = min(canvas.size["width"], canvas.size["height"]) // 2 - 20
            ActionChains(browser).move_to_element_with_offset(canvas, -side // 2, side // 4).click_and_hold() \
                .move_by_offset(side, 0).move_by_offset(0, side // 8).move_by_offset(-side, 0) \
                .move_by_offset(0, side // 8).move_by_offset(side, 0).release().perform()
            browser.find_element(By.ID, "run-edit").click()
            results = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results img")
                                 if len(b.find_elements(By.CSS_SELECTOR, "#results img")) >= 3 else False)
            shots = []
            for i, img in enumerate(results[:3]):
                with urllib.request.urlopen(img.get_attribute("src")) as r:
                    (tmp_path / f"r{i}.png").write_bytes(r.read())
                shots.append(np.asarray(Image.open(tmp_path / f"r{i}.png").convert("RGB")))
            assert all(s.shape == (64, 64, 3) for s in shots)
            assert np.array_equal(shots[0][:16], shots[2][:16])              # unpainted top rows unchanged
            browser.save_screenshot(str(tmp_path / "edit.png"))
            if os.environ.get("MAMBAGEN_APP_SCREENSHOTS"):
                dest = os.environ["MAMBAGEN_APP_SCREENSHOTS"]
                os.makedirs(dest, exist_ok=True)
                for name in ("generate.png", "edit.png"):
                    shutil.copy(tmp_path / name, os.path.join(dest, name))
        finally:
            browser.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
