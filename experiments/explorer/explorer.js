// The sense explorer's behaviour: everything it shows is in the JSON of #explorer-data, written by
// experiments/visualize_senses.py (explorer_data() documents each field); nothing is fetched.
'use strict';
const D = JSON.parse(document.getElementById('explorer-data').textContent);
const WORD_INDEX = new Map(D.words.map((w, i) => [w.word, i]));
const LANG_NAME = {en: 'English', fr: 'French'};
const $ = (id) => document.getElementById(id);
let selectedSense = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function tokenChip(id) {
  const [text, lang, en, fr] = D.tokens[id];
  return el('span', {class: `tok ${lang}`, title: `id ${id}: ${en} EN / ${fr} FR training occurrences`}, text);
}

function normalise(query) {
  return query.trim().toLowerCase().normalize('NFC');
}

// ------------------------------------------------------------------------------------------- a word

function showWord(query) {
  const word = normalise(query);
  const i = WORD_INDEX.get(word);
  $('suggestions').replaceChildren();
  if (i === undefined) {
    $('word-view').hidden = true;
    suggest(word);
    return;
  }
  const w = D.words[i];
  $('status').textContent = '';
  $('word-view').hidden = false;
  $('word-title').textContent = w.word;
  const lists = w.lists.map((lang) => `${LANG_NAME[lang]} (${D.settings['n_' + lang]} most frequent)`).join(' and ');
  $('word-info').textContent = `training counts: ${w.counts.en} English, ${w.counts.fr} French; pieces: ` +
    `${w.pieces.join(' · ')}; in the ${lists} list${w.lists.length > 1 ? 's' : ''}. ` +
    `Each sense: the tokens it pushes up most (+) and least (−), strongest first.`;
  $('senses').replaceChildren(...w.senses.map((sense, l) => senseCard(sense, l)));
  showNeighbours(w);
  history.replaceState(null, '', '#' + encodeURIComponent(w.word));
}

function senseCard([top, bottom], l) {
  const card = el('div', {class: 'sense' + (l === selectedSense ? ' selected' : ''), 'data-sense': l},
    el('div', {class: 'sense-head'}, `sense ${l}`),
    el('div', {class: 'sense-label'}, D.labels[l]),
    el('div', {class: 'row top'}, el('span', {class: 'what'}, '+'), ...top.map(tokenChip)),
    el('div', {class: 'row bottom'}, el('span', {class: 'what'}, '−'), ...bottom.map(tokenChip)));
  card.addEventListener('click', () => selectSense(l));
  return card;
}

function showNeighbours(w) {
  const blocks = [];
  for (const [tgt, byRep] of Object.entries(w.neighbours)) {
    const gold = new Set((w.gold && w.gold[tgt]) || []);
    for (const rep of D.settings.representations) {
      const items = byRep[rep].map(([j, score]) => {
        const word = D.words[j].word;
        const item = el('li', {class: gold.has(word) ? 'hit' : ''}, el('a', {href: '#' + encodeURIComponent(word)}, word),
                        ' ', el('span', {class: 'score'}, score.toFixed(3)));
        item.querySelector('a').addEventListener('click', (e) => { e.preventDefault(); search(word); });
        return item;
      });
      blocks.push(el('div', {class: 'list', 'data-lang': tgt, 'data-rep': rep},
        el('strong', {}, `→ ${tgt.toUpperCase()}, ${rep.replace('_', ' ')}`), el('ol', {}, ...items)));
    }
    if (gold.size) blocks.push(el('div', {class: 'list gold'}, el('strong', {}, `MUSE ${tgt.toUpperCase()}`),
                                  el('div', {}, [...gold].join(', '))));
  }
  $('neighbours').replaceChildren(...blocks);
}

function suggest(word) {
  if (!word) { $('status').textContent = 'Type a word.'; return; }
  const matches = D.words.filter((w) => w.word.startsWith(word)).slice(0, 15);
  $('status').textContent = matches.length
    ? `“${word}” is not one of the precomputed words; some that start with it:`
    : `No precomputed word starts with “${word}” (the ${D.settings.n_words} most frequent words of each ` +
      `language are here; experiments/sense_vector.py --words ${word} analyses any word).`;
  $('suggestions').replaceChildren(...matches.map((w) => {
    const button = el('button', {type: 'button'}, w.word);
    button.addEventListener('click', () => search(w.word));
    return button;
  }));
}

function search(word) {
  $('word').value = word;
  showWord(word);
}

// ------------------------------------------------------------------------------------------- α

function selectSense(l) {
  selectedSense = l;
  $('sense').value = String(l);
  for (const card of document.querySelectorAll('.sense')) {
    card.classList.toggle('selected', Number(card.dataset.sense) === l);
  }
  showAlpha();
}

function heatmap(sentence, l) {
  const T = sentence.tokens.length;
  const head = el('tr', {}, el('th', {}), ...sentence.tokens.map((t) => el('th', {class: 'col'}, t)));
  const rows = sentence.tokens.map((t, i) => el('tr', {}, el('th', {}, t), ...Array.from({length: T}, (_, j) => {
    if (j > i) return el('td', {});
    const a = sentence.alpha[l][i][j];
    return el('td', {title: `α = ${a} (${sentence.tokens[i]} ← ${sentence.tokens[j]})`,
                     style: `background: rgba(120, 30, 90, ${Math.min(1, a).toFixed(3)})`});
  })));
  return [el('div', {class: 'caption'}, `${sentence.lang.toUpperCase()}: ${sentence.text}`),
          el('table', {'data-tokens': T}, head, ...rows)];
}

function showAlpha() {
  const pair = Number($('sentence').value);
  for (const lang of ['en', 'fr']) {
    const s = D.sentences.find((x) => x.pair === pair && x.lang === lang);
    $('alpha-' + lang).replaceChildren(...(s ? heatmap(s, selectedSense) : []));
  }
}

// ------------------------------------------------------------------------------------------- sense roles

function roleTable(M, caption) {
  const values = M.flat(), lo = Math.min(...values), hi = Math.max(...values);
  const head = el('tr', {}, el('th', {}, 'en \\ fr'), ...M.map((_, m) => el('th', {class: 'col'}, String(m))));
  const rows = M.map((row, l) => el('tr', {}, el('th', {}, String(l)), ...row.map((v, m) => {
    const shade = hi > lo ? (v - lo) / (hi - lo) : 0;
    const cell = el('td', {title: `mean cos(C(en)_${l}, C(fr)_${m}) = ${v}`,
                           style: `background: rgba(30, 90, 160, ${shade.toFixed(3)}); cursor: pointer`});
    cell.addEventListener('click', () => selectSense(l));
    return cell;
  })));
  return [el('div', {class: 'caption'}, caption), el('table', {'data-roles': M.length}, head, ...rows)];
}

function showRoles() {
  const R = D.roles;
  if (!R) { $('roles-view').hidden = true; return; }
  const fixed = R.matching.filter((m, l) => m === l).length;
  $('roles-info').textContent = `On ${R.n_pairs} MUSE en→fr pairs with different spellings: M[l, m] = mean ` +
    `cos(C(en)_l, C(fr)_m). Diagonal dominance ${R.dominance.true.toFixed(3)} (shuffled pairs ` +
    `${R.dominance.shuffled.toFixed(3)}), permutation p = ${R.p.toPrecision(3)} over ${R.n_permutations} ` +
    `relabellings; translations − shuffled ${R.contrast.toFixed(3)} [${R.contrast_ci[0].toFixed(3)}, ` +
    `${R.contrast_ci[1].toFixed(3)}]; the best one-to-one matching keeps ${fixed}/${R.matching.length} senses ` +
    'in place. Click a row to show that sense\'s α.';
  $('roles-true').replaceChildren(...roleTable(R.matrix, 'translation pairs'));
  $('roles-shuffled').replaceChildren(...roleTable(R.shuffled, 'shuffled pairs'));
}

// ------------------------------------------------------------------------------------------- start

function init() {
  const m = D.model;
  $('model-info').textContent = `${m.out_dir} (${m.checkpoint}, iteration ${m.iter_num}): ${m.n_senses} senses, ` +
    `${m.tokenizer} vocabulary of ${m.vocab_size}; ${D.words.length} words ` +
    `(${D.settings.n_en} English, ${D.settings.n_fr} French most frequent in training); labels from ${D.settings.labels_from}.`;
  $('sense').replaceChildren(...D.labels.map((label, l) => el('option', {value: l}, `${l}: ${label}`)));
  const pairs = [...new Set(D.sentences.map((s) => s.pair))];
  $('sentence').replaceChildren(...pairs.map((p) => el('option', {value: p},
    `${p}: ${D.sentences.find((s) => s.pair === p).text.slice(0, 60)}`)));
  if (!pairs.length) $('alpha-view').hidden = true;
  $('sentence').addEventListener('change', showAlpha);
  $('sense').addEventListener('change', () => selectSense(Number($('sense').value)));
  $('labels').replaceChildren(el('tr', {}, el('th', {}, 'sense'), el('th', {}, 'label')),
    ...D.labels.map((label, l) => el('tr', {}, el('td', {}, String(l)), el('td', {}, label))));
  $('rules').replaceChildren(
    el('p', {}, `Senses: the ${D.settings.top_k} English/French tokens with the highest (+) and lowest (−) logit ` +
      'E·C(w)_l; a word of several pieces has the mean of its pieces\' sense vectors.'),
    el('p', {}, `Neighbours: the ${D.settings.n_neighbours} best words of the other language's list by CSLS ` +
      `(k = ${D.settings.csls_k}) with the mean sense vector and with the input embedding; ✓: in the MUSE test dictionary.`));
  const input = $('word');
  input.addEventListener('input', () => showWord(input.value));
  input.addEventListener('keydown', (e) => {
    const first = $('suggestions').querySelector('button');
    if (e.key === 'Enter' && first) search(first.textContent);
  });
  showRoles();
  selectSense(0);
  const start = decodeURIComponent(location.hash.slice(1));
  if (start) search(start); else $('status').textContent = 'Type a word.';
}

init();
