"""The sense explorer of experiments/visualize_senses.py in a real headless browser (Debian's chromium): the
page loads from the file alone, a word typed into it shows its senses as the model has them, and a
screenshot is taken.

Chromium is driven over the DevTools protocol through --remote-debugging-pipe (commands on its fd 3,
replies and events on its fd 4, each a JSON message ending in NUL): no WebDriver, no websocket library,
nothing beyond the standard library. Without chromium the test is skipped, saying so; in CI (env CI set)
it fails instead. Also a tool: regenerate the README's screenshot with

    python tests/test_explorer_browser.py out/tiny_backpack/senses/sense_explorer.html droit docs/sense_explorer.png \
        --height 1450 --sense 1
"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
VIEWPORT = (1280, 1000)


def find_chromium():
    """The browser: $CHROMIUM, else the first of BROWSERS on PATH, else None."""
    return os.environ.get('CHROMIUM') or next((path for path in map(shutil.which, BROWSERS) if path), None)


class Chromium:
    """A headless chromium with one page, driven over the DevTools protocol (CDP) through a pipe."""

    def __init__(self, binary, timeout=30, viewport=VIEWPORT):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix='chromium-profile-')
        to_browser, self._in = os.pipe()    # we write commands, chromium reads them on its fd 3
        self._out, from_browser = os.pipe()  # chromium writes on its fd 4, we read
        args = ['--headless', '--no-sandbox',  # no sandbox: CI containers run as root
                '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--disable-extensions',
                '--remote-debugging-pipe', f'--user-data-dir={self.profile}',
                f'--window-size={viewport[0]},{viewport[1]}']
        self.proc = subprocess.Popen(['bash', '-c', f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}', binary, *args],
                                     pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b'', 0, []
        target = self.send('Target.createTarget', {'url': 'about:blank'})['targetId']
        self.session = self.send('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
        for domain in ('Page', 'Runtime', 'Network'):
            self.send(f'{domain}.enable', page=True)
        self.send('Emulation.setDeviceMetricsOverride', {'width': viewport[0], 'height': viewport[1],
                                                         'deviceScaleFactor': 1, 'mobile': False}, page=True)

    def _message(self, deadline):
        while b'\0' not in self._buffer:
            ready, _, _ = select.select([self._out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError('chromium did not answer in time')
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise RuntimeError(f'chromium exited: {self.proc.stderr.read().decode(errors="replace")[-2000:]}')
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b'\0', 1)
        return json.loads(message)

    def send(self, method, params=None, page=False):
        """Run one CDP command (on the page's session when page) and return its result; events that
        arrive meanwhile are kept in self.events."""
        self._next_id += 1
        message = {'id': self._next_id, 'method': method, 'params': params or {}}
        if page:
            message['sessionId'] = self.session
        os.write(self._in, json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get('id') == self._next_id:
                if 'error' in reply:
                    raise RuntimeError(f'{method}: {reply["error"]}')
                return reply['result']
            self.events.append(reply)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (a thrown exception fails)."""
        result = self.send('Runtime.evaluate', {'expression': expression, 'returnByValue': True}, page=True)
        if 'exceptionDetails' in result:
            raise AssertionError(f'{expression}: {result["exceptionDetails"]}')
        return result['result'].get('value')

    def wait_for(self, expression, timeout=None):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f'never true: {expression}')

    def open(self, path):
        self.send('Page.navigate', {'url': Path(path).resolve().as_uri()}, page=True)
        self.wait_for("document.readyState === 'complete'")

    def type(self, text):
        """Type into the focused element key by key, as a user does (keydown, keypress/input, keyup)."""
        for ch in text:
            self.send('Input.dispatchKeyEvent', {'type': 'keyDown', 'key': ch, 'text': ch}, page=True)
            self.send('Input.dispatchKeyEvent', {'type': 'keyUp', 'key': ch}, page=True)

    def screenshot(self, path):
        data = self.send('Page.captureScreenshot', {'format': 'png', 'captureBeyondViewport': False}, page=True)['data']
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.send('Browser.close')
            self.proc.wait(timeout=10)
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._in)
            os.close(self._out)
            self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def show_word(browser, html, word):
    """Open the explorer, type `word` into its search box and wait until its senses are drawn."""
    browser.open(html)
    browser.evaluate("document.getElementById('word').focus()")
    browser.type(word)
    browser.wait_for(f"document.getElementById('word-title').textContent === {json.dumps(word)} && "
                     "document.querySelectorAll('#senses .sense').length > 0")


# ----------------------------------------------------------------------------- the test

NO_CHROMIUM = (f'no chromium found ({", ".join(BROWSERS)} on PATH, or $CHROMIUM): '
               'apt-get install chromium (.ci/run installs it)')
IN_CI = os.environ.get('CI', '').lower() not in ('', '0', 'false')
# skipped (before the tiny model is trained) only outside CI; in CI a missing browser fails the test
pytestmark = pytest.mark.skipif(find_chromium() is None and not IN_CI, reason=NO_CHROMIUM)


@pytest.fixture(scope='module')
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.fail(NO_CHROMIUM + ' — in CI the browser test must run')
    browser = Chromium(binary)
    yield browser
    browser.close()


@pytest.fixture(scope='module')
def explorer(tiny_backpack_dir, tmp_path_factory):
    """The explorer of the tiny Backpack (300 words per language, 2 example pairs) and what it was made from."""
    out = tmp_path_factory.mktemp('explorer')
    result = subprocess.run([sys.executable, str(REPO / 'experiments' / 'visualize_senses.py'), '--out_dir',
                             str(tiny_backpack_dir), '--output', str(out), '--n_words', '300', '--n_sentences', '2',
                             '--no_png'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    html = out / 'sense_explorer.html'
    text = html.read_text(encoding='utf-8')
    opening = '<script id="explorer-data" type="application/json">'
    start = text.index(opening) + len(opening)
    data = json.loads(text[start:text.index('</script>', start)])
    return html, data


def test_explorer_in_a_browser(chromium, explorer, tmp_path):
    html, data = explorer
    k, top_k = data['model']['n_senses'], data['settings']['top_k']
    word = 'droit'
    entry = next(w for w in data['words'] if w['word'] == word)
    show_word(chromium, html, word)

    # one card per sense, each with its derived label and the tokens the data holds for it, coloured by language
    cards = chromium.evaluate("""[...document.querySelectorAll('#senses .sense')].map(card => ({
        label: card.querySelector('.sense-label').textContent,
        top: [...card.querySelectorAll('.top .tok')].map(t => [t.textContent, t.className]),
        bottom: [...card.querySelectorAll('.bottom .tok')].map(t => [t.textContent, t.className])}))""")
    assert len(cards) == k
    for l, card in enumerate(cards):
        assert card['label'] == data['labels'][l]
        for shown, ids in ((card['top'], entry['senses'][l][0]), (card['bottom'], entry['senses'][l][1])):
            assert len(shown) == top_k
            assert shown == [[data['tokens'][str(i)][0], f"tok {data['tokens'][str(i)][1]}"] for i in ids]
    classes = {cls for card in cards for key in ('top', 'bottom') for _, cls in card[key]}
    assert classes <= {'tok en', 'tok fr', 'tok both'} and len(classes) >= 2, classes

    # cross-lingual neighbours: FR -> EN, one list per representation, in the data's order
    lists = chromium.evaluate("""[...document.querySelectorAll('#neighbours .list[data-rep]')].map(div =>
        [div.dataset.lang, div.dataset.rep, [...div.querySelectorAll('li a')].map(a => a.textContent)])""")
    assert lists == [[tgt, rep, [data['words'][j]['word'] for j, _ in entry['neighbours'][tgt][rep]]]
                     for tgt in entry['neighbours'] for rep in data['settings']['representations']]
    assert lists and all(lang == 'en' for lang, _, _ in lists)

    # the α heatmaps of the first stored pair, English and French, one row per token; clicking sense 1 shows it
    for lang in ('en', 'fr'):
        sentence = next(s for s in data['sentences'] if s['pair'] == 0 and s['lang'] == lang)
        rows = chromium.evaluate(f"document.querySelectorAll('#alpha-{lang} table tr').length")
        assert rows == len(sentence['tokens']) + 1  # + the header row
    chromium.evaluate("document.querySelectorAll('#senses .sense')[1].click()")
    assert chromium.evaluate("document.getElementById('sense').value") == '1'
    en = next(s for s in data['sentences'] if s['pair'] == 0 and s['lang'] == 'en')
    last = len(en['tokens']) - 1
    cell = chromium.evaluate(f"document.querySelectorAll('#alpha-en table tr')[{last + 1}].children[1].title")
    assert cell.startswith('α = ') and float(cell.split()[2]) == en['alpha'][1][last][0]

    path = tmp_path / 'sense_explorer.png'
    chromium.screenshot(path)
    from PIL import Image  # matplotlib's dependency
    with Image.open(path) as image:
        assert image.size == VIEWPORT
        assert len(image.convert('RGB').getcolors(1 << 20)) > 50  # text and coloured chips, not a blank page

    # the sense-role heatmaps: k x k cells each, titled with the data's cosines; a row click selects its sense
    for view, matrix in (('roles-true', data['roles']['matrix']), ('roles-shuffled', data['roles']['shuffled'])):
        assert chromium.evaluate(f"document.querySelectorAll('#{view} td').length") == k * k
        title = chromium.evaluate(f"document.querySelectorAll('#{view} tr')[3].children[2].title")
        assert title.endswith(f"= {matrix[2][1]}") and 'C(en)_2, C(fr)_1' in title
    chromium.evaluate("document.querySelectorAll('#roles-true tr')[4].children[1].click()")
    assert chromium.evaluate("document.getElementById('sense').value") == '3'

    # a word that is not there: suggestions instead of senses
    chromium.evaluate("document.getElementById('word').value = ''")
    chromium.type('parl')
    chromium.wait_for("document.getElementById('status').textContent.includes('“parl”')")
    suggested = chromium.evaluate("[...document.querySelectorAll('#suggestions button')].map(b => b.textContent)")
    assert suggested and all(w.startswith('parl') for w in suggested)
    assert chromium.evaluate("document.getElementById('word-view').hidden")

    # offline: the page asked for nothing but itself, and no script error was raised
    requested = [e['params']['request']['url'] for e in chromium.events
                 if e.get('method') == 'Network.requestWillBeSent']
    assert requested == [html.resolve().as_uri()], requested
    errors = [e for e in chromium.events if e.get('method') == 'Runtime.exceptionThrown']
    assert not errors, errors


def main(argv):
    """A screenshot of the explorer showing a word's senses (and the α of one sense), e.g. the README's."""
    import argparse
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument('html', help='a sense_explorer.html')
    p.add_argument('word', help='the word to type')
    p.add_argument('png', help='where the screenshot goes')
    p.add_argument('--height', type=int, default=VIEWPORT[1], help=f'viewport height (width {VIEWPORT[0]})')
    p.add_argument('--sense', type=int, default=0, help='the sense whose α heatmaps are shown')
    args = p.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        sys.exit('no chromium found: apt-get install chromium')
    browser = Chromium(binary, viewport=(VIEWPORT[0], args.height))
    try:
        show_word(browser, args.html, args.word)
        browser.evaluate(f"document.querySelectorAll('#senses .sense')[{args.sense}].click()")
        browser.screenshot(args.png)
    finally:
        browser.close()
    print(f'wrote {args.png}')


if __name__ == '__main__':
    main(sys.argv[1:])
