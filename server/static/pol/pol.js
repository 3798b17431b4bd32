/* Proof-of-life page (docs/proof-of-life-page.md): guided capture, one step per screen,
 * batches of frames answered at once by the server. ES5 syntax on purpose, plus Promise
 * (feature-detected): old browsers can still parse it and say what to do. Visible text
 * comes from #pol-strings only. IIFE body not indented: the page must stay light. */
(function () {
'use strict';
// Guided capture (the server's session answer has "guided"): one step at a time, short
// batches of frames, the server's answer shown at once. One-shot capture (below, plan())
// only when the server answers without "guided" (an older server).
var STEP_LEAD_MS = 600; // a challenge's instruction is shown this long before its first frame
var GOOD_MS = 900;      // "good" stays on screen this long before the next step
var SLOW_MS = 2500;     // a batch answered later than this: the small profile from then on
var SLOW = { width: 320, height: 240, quality: 0.6 };
var GUIDED_QUALITY = 0.7;
var EAGER_BATCHES = 4;  // a step's first batches go at once; then its share of max_frames is paced
var HINT_SPEAK_MS = 5000; // the same hint is spoken again at most this often
var PROGRESSING = { turn_more: 1, open_wider: 1, blink: 1 }; // face seen, movement under way
var SOUND_KEY = 'dibao-pol-sound';
var FACE_MS = 1500; // one-shot: "face in the frame" is shown this long, its frames at the end
var LEAD_MS = 800;  // one-shot: time to read and start each challenge before its first frame
var QUALITY = [0.8, 0.65, 0.5, 0.35, 0.2]; // JPEG quality, lowered while a frame is too big
var NOT_LIVE = { static_frames: 1, planar_motion: 1, replayed_frames: 1 };
var CAMERA_ERRORS = [
  [/^(NotAllowed|PermissionDenied|Security)Error$/, 'c_denied'],
  [/^(NotFound|DevicesNotFound|Overconstrained|ConstraintNotSatisfied)Error$/, 'c_not_found'],
  [/^(NotReadable|TrackStart|Abort)Error$/, 'c_busy'],
  [/^NotSupportedError$/, 'c_unsupported']
];
var doc = document, win = window, nav = navigator;
var URLS = win.URL || win.webkitURL, perf = win.performance;
var S = {};
try { S = JSON.parse($('pol-strings').textContent) || {}; } catch (e) { /* keys show */ }
var root = $('pol'), video = $('video');
var API = (root.getAttribute('data-api-base') || '').replace(/\/+$/, '');
var TOKEN = root.getAttribute('data-link-token') || '';
var st = { busy: false, phase: '', aborted: false, stream: null, session: null,
         blobs: null, offsets: null, action: null, attempt: 0, run: null };
var sound = true;
try { sound = win.localStorage.getItem(SOUND_KEY) !== 'off'; } catch (e) { /* no storage: on */ }
// Read by the browser tests: what this attempt sent (JPEG bytes, batches, frames).
win.__polStats = { bytes: 0, batches: 0, frames: 0, slow: false };

function $(id) { return doc.getElementById(id); }
function now() { return perf && perf.now ? perf.now() : +new Date(); }
function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
function num(v, d) { v = Number(v); return isFinite(v) && v > 0 ? Math.floor(v) : d; }
function pad2(n) { return (n < 10 ? '0' : '') + n; }
function hide(el, h) { if (h) el.setAttribute('hidden', ''); else el.removeAttribute('hidden'); }
function text(el, s) { el.textContent = s; }

// t('attempts_left', {n: 3}): the translated string with its {name} placeholders filled.
function t(key, vars) {
  var s = has(S, key) ? String(S[key]) : key;
  for (var k in vars || {}) if (has(vars, k)) s = s.split('{' + k + '}').join(vars[k]);
  return s;
}

function show(name) {
  var v = root.querySelectorAll('.view');
  for (var i = 0; i < v.length; i++) hide(v[i], v[i].id !== 'v-' + name);
  win.scrollTo(0, 0);
}

// kind: "ok" | "fail" | "info" (the big mark); act: {label, run} for the button, or null.
function result(kind, title, lines, small, act) {
  var ul = $('res-lines'), btn = $('btn-action');
  st.busy = false;
  st.phase = '';
  $('res-mark').className = 'mark ' + kind;
  text($('res-title'), title);
  while (ul.firstChild) ul.removeChild(ul.firstChild);
  for (var i = 0; i < lines.length; i++) {
    var li = ul.appendChild(doc.createElement('li'));
    li.className = kind === 'ok' ? 'ok' : '';
    text(li, lines[i]);
  }
  text($('res-small'), small || '');
  hide($('res-small'), !small);
  st.action = act || null;
  if (act) { text(btn, act.label); btn.disabled = false; }
  hide(btn, !act);
  show('result');
  speak(title);
}

function month(m) { return m ? t('month', { month: m }) : ''; }
function again() { return { label: t('try_again'), run: start }; }
function caseworker(title, m) { result('info', t(title), [t('caseworker')], month(m)); }
function passed(already, m) {
  stopCamera();
  result('ok', t('passed_title'), [t(already ? 'already_passed' : 'passed_text')], month(m));
}

// The last day to finish: a window closing at midnight means "by the day before".
function lastDay(iso) {
  var d = new Date(iso ? new Date(iso).getTime() - 1 : NaN);
  return isNaN(d.getTime()) ? '' : d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate());
}

// Resolves (never rejects) with {status, data}; status 0: no answer.
function request(method, path, body, progress, timeout) {
  return new Promise(function (resolve) {
    var x = new XMLHttpRequest(), done = false;
    function end(status) {
      var data = null;
      if (done) return;
      done = true;
      try { data = JSON.parse(x.responseText); } catch (e) { /* not JSON */ }
      resolve({ status: status, data: data });
    }
    x.open(method, API + path, true);
    x.timeout = timeout || (progress ? 180000 : 30000);
    x.setRequestHeader('Accept', 'application/json');
    if (typeof body === 'string') x.setRequestHeader('Content-Type', 'application/json');
    if (progress && x.upload) {
      x.upload.onprogress = function (e) { if (e.lengthComputable && e.total) progress(e.loaded / e.total); };
    }
    x.onload = function () { end(x.status); };
    x.onerror = x.ontimeout = x.onabort = function () { end(0); };
    x.send(body || null);
  });
}

// An unsuccessful answer. retry: "try again"; resend: "send again" (same frames) when
// the answer was lost or the server failed.
function httpFail(r, retry, resend) {
  var code = (r.data && r.data.error && r.data.error.code) || '';
  var E = t('error_title');
  var small = code || r.status ? t('error_code', { code: code || 'http_' + r.status }) : '';
  var tryAct = { label: t('try_again'), run: retry };
  var netAct = resend ? { label: t('send_again'), run: resend } : tryAct;
  if (code === 'already_passed') return passed(true);
  if (code === 'attempts_exhausted') return caseworker('no_attempts_title');
  if (code === 'not_designated') return result('info', t('exempt_title'), []);
  if (code === 'link_expired') return result('info', E, [t('e_link_expired')], small);
  if (code === 'session_expired') return result('fail', t('failed_title'), [t('r_session_expired')], '', again());
  if (/^(session|nonce)_/.test(code)) return result('fail', t('failed_title'), [t('r_other')], small, again());
  if (code === 'rate_limited' || r.status === 429) return result('info', E, [t('e_rate_limited')], '', tryAct);
  if (!r.status) return result('info', E, [t('e_network')], '', netAct);
  if (r.status === 404 || /link/.test(code)) return result('fail', E, [t('e_link_invalid')], small);
  if (r.status >= 500) return result('fail', E, [t('e_server')], small, netAct);
  result('fail', E, [t('r_other')], small, tryAct);
}

function boot() {
  st.busy = true;
  show('loading');
  request('GET', '/status?link_token=' + encodeURIComponent(TOKEN)).then(function (r) {
    var d = r.data || {}, notes = [], problem = cameraProblem(), day = lastDay(d.deadline_at || d.window_closes_at);
    if (r.status !== 200 || !d.status) return httpFail(r, boot);
    if (d.status === 'passed') return passed(true, d.month);
    if (d.status === 'exempt') return result('info', t('exempt_title'), [], month(d.month));
    if (d.status === 'review') return caseworker('review_title', d.month);
    if (d.attempts_left === 0) return caseworker('no_attempts_title', d.month);
    if (problem) return result('fail', t('error_title'), [t(problem)]);
    if (d.status === 'missed') notes.push(t('late'));
    if (d.status === 'failed') {
      notes.push(t('last_failed'));
      if (typeof d.attempts_left === 'number') notes.push(t('attempts_left', { n: d.attempts_left }));
    }
    if (day) notes.push(t('deadline', { date: day }));
    text($('intro-note'), notes.join(' '));
    hide($('intro-note'), !notes.length);
    $('btn-start').disabled = false;
    st.busy = false;
    show('intro');
  });
}

function legacyGum() { return nav.getUserMedia || nav.webkitGetUserMedia; }

// The string key of why this browser cannot do the check, or "".
function cameraProblem() {
  var md = nav.mediaDevices, c = doc.createElement('canvas');
  if (win.isSecureContext === false) return 'c_insecure';
  if (!win.FormData || !win.Blob || !URLS || !c.getContext || !c.getContext('2d')) return 'c_unsupported';
  return (md && md.getUserMedia) || legacyGum() ? '' : 'c_unsupported';
}

function gum(constraints) {
  var md = nav.mediaDevices, legacy = legacyGum();
  if (md && md.getUserMedia) return md.getUserMedia(constraints);
  return new Promise(function (ok, fail) {
    if (legacy) legacy.call(nav, constraints, ok, fail); else fail({ name: 'NotSupportedError' });
  });
}

function openCamera() {
  return gum({ audio: false, video: { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 480 } } })
    .catch(function (err) {
      if (/^(Overconstrained|ConstraintNotSatisfied|Type)Error$/.test(err && err.name)) {
        return gum({ audio: false, video: true });
      }
      throw err;
    }).then(function (stream) {
      st.stream = stream;
      video.muted = true;
      if ('srcObject' in video) video.srcObject = stream; else video.src = URLS.createObjectURL(stream);
      return videoReady();
    });
}

// Resolves once the preview shows real frames.
function videoReady() {
  return new Promise(function (resolve, reject) {
    var poll = setInterval(check, 100);
    var timer = setTimeout(function () { end({ name: 'TimeoutError' }); }, 15000);
    function end(err) {
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err); else resolve();
    }
    function check() { if (video.videoWidth > 0 && video.readyState >= 2) end(null); }
    try {
      var p = video.play();
      if (p && p.catch) p.catch(function () { /* the poll waits for autoplay */ });
    } catch (e) { /* old browsers: the autoplay attribute */ }
  });
}

function stopCamera() {
  var s = st.stream, tracks = s && s.getTracks ? s.getTracks() : [];
  st.stream = null;
  for (var i = 0; i < tracks.length; i++) tracks[i].stop();
  if (s && !tracks.length && s.stop) s.stop();
  try { video.pause(); } catch (e) { /* nothing playing */ }
  if ('srcObject' in video) video.srcObject = null; else video.removeAttribute('src');
}

function cameraFail(err) {
  var name = (err && err.name) || '', key = 'c_failed', act;
  for (var i = 0; i < CAMERA_ERRORS.length; i++) {
    if (CAMERA_ERRORS[i][0].test(name)) { key = CAMERA_ERRORS[i][1]; break; }
  }
  if (key === 'c_busy') act = again();
  else if (key === 'c_denied' || key === 'c_failed') act = { label: t('reload'), run: function () { win.location.reload(); } };
  stopCamera();
  result('fail', t('error_title'), [t(key)], name ? t('error_code', { code: name }) : '', act);
}

function instruct(code, s) {
  $('instr').className = 'instr' + (code ? ' s-' + code : '');
  text($('instr-text'), s);
  if (code && code !== 'face' && nav.vibrate) { try { nav.vibrate(80); } catch (e) { /* fine */ } }
}

function dots(count, current) {
  var ol = $('steps');
  while (ol.children.length > count) ol.removeChild(ol.lastChild);
  while (ol.children.length < count) ol.appendChild(doc.createElement('li'));
  for (var i = 0; i < count; i++) ol.children[i].className = i < current ? 'done' : (i === current ? 'now' : '');
}

// The unmirrored video into W x H: cropped if the orientations match, else letterboxed.
function drawFrame(ctx, W, H) {
  var vw = video.videoWidth || W, vh = video.videoHeight || H;
  var k = (vw >= vh) === (W >= H) ? Math.max(W / vw, H / vh) : Math.min(W / vw, H / vh);
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, W, H);
  ctx.drawImage(video, (W - vw * k) / 2, (H - vh * k) / 2, vw * k, vh * k);
}

// toBlob copies the canvas at once: it can be drawn on again.
function toJpeg(canvas, q) {
  return new Promise(function (resolve) {
    if (canvas.toBlob) return canvas.toBlob(resolve, 'image/jpeg', q);
    var bin = atob(canvas.toDataURL('image/jpeg', q).split(',')[1]), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    resolve(new Blob([bytes], { type: 'image/jpeg' }));
  });
}

// A frame over max_bytes (rare) is decoded and encoded again at a lower quality.
function encode(canvas, maxBytes, quality) {
  function fit(blob, i) {
    if (!blob || blob.size <= maxBytes || i >= QUALITY.length) return blob;
    return new Promise(function (resolve) {
      var img = new Image(), url = URLS.createObjectURL(blob);
      img.onload = function () {
        var c = doc.createElement('canvas');
        URLS.revokeObjectURL(url);
        c.width = img.width;
        c.height = img.height;
        c.getContext('2d').drawImage(img, 0, 0);
        resolve(toJpeg(c, Math.min(QUALITY[i], quality || 1)).then(function (b) { return fit(b, i + 1); }));
      };
      img.onerror = function () { URLS.revokeObjectURL(url); resolve(blob); };
      img.src = url;
    });
  }
  return toJpeg(canvas, quality || QUALITY[0]).then(function (b) { return fit(b, 1); });
}

// The timeline in ms: "face" at 0, ~30 % of the frames at the end of FACE_MS; then per
// challenge: instruction, LEAD_MS, its share of the frames.
function plan(steps, count, every) {
  var n = steps.length - 1;
  var onFace = n ? Math.max(1, Math.min(Math.round(count * 0.3), count - n)) : count;
  var rest = count - onFace, frames = [], showAt = [0];
  var time = Math.max(0, FACE_MS - onFace * every);
  for (var s = 0; s < steps.length; s++) {
    var k = onFace;
    if (s > 0) {
      k = Math.floor(rest / n) + (s - 1 < rest % n ? 1 : 0);
      showAt.push(time);
      time += LEAD_MS;
    }
    for (var j = 0; j < k; j++, time += every) frames.push(time);
  }
  return { frames: frames, showAt: showAt };
}

function capture(sess) {
  var cap = sess.capture || {}, lim = sess.frames || {};
  var count = Math.max(num(lim.min, 1), Math.min(num(lim.max, 12), num(cap.count, 10)));
  var W = num(cap.width, 640), H = num(cap.height, 480), maxBytes = num(lim.max_bytes, 300000);
  var steps = ['face'].concat(sess.challenges || []);
  var p = plan(steps, count, Math.max(50, num(cap.interval_ms, 300)));
  var canvas = doc.createElement('canvas'), ctx, jobs = [], offsets = [];
  canvas.width = W;
  canvas.height = H;
  ctx = canvas.getContext('2d');
  return new Promise(function (resolve, reject) {
    var t0 = now(), first = -1, k = 0, s = -1;
    st.phase = 'capture';
    (function tick() {
      var at = now(), next;
      if (st.aborted) return reject({ stop: 'aborted' });
      while (s + 1 < steps.length && p.showAt[s + 1] <= at - t0) {
        s++;
        instruct(steps[s], t(steps[s]));
        dots(steps.length, s);
      }
      if (k < p.frames.length && p.frames[k] <= at - t0) {
        if (first < 0) first = at;
        drawFrame(ctx, W, H);
        offsets.push(Math.round(at - first));
        jobs.push(encode(canvas, maxBytes));
        k++;
      }
      if (k >= p.frames.length) return resolve();
      next = s + 1 < steps.length ? Math.min(p.frames[k], p.showAt[s + 1]) : p.frames[k];
      setTimeout(tick, Math.max(0, next - (now() - t0)));
    })();
  }).then(function () {
    return Promise.all(jobs);
  }).then(function (blobs) {
    for (var i = 0; i < blobs.length; i++) if (!blobs[i]) throw { stop: 'camera', err: { name: 'EncodingError' } };
    return { blobs: blobs, offsets: offsets };
  });
}

function start() {
  var id;
  if (st.busy) return;
  id = ++st.attempt;
  st.busy = true;
  st.aborted = false;
  st.phase = 'camera';
  $('btn-start').disabled = true;
  dots(0, 0);
  stepView('', t('camera_allow'));
  speak(t('camera_allow')); // within the tap: some browsers only speak after a user gesture
  show('camera');
  openCamera().catch(function (err) {
    throw { stop: 'camera', err: err };
  }).then(function () {
    if (st.attempt !== id) throw { stop: 'gone' };
    st.phase = 'session';
    stepView('face', t('face'));
    return request('POST', '/sessions', JSON.stringify({ link_token: TOKEN, guided: true }));
  }).then(function (r) {
    if (st.attempt !== id) throw { stop: 'gone' };
    if (r.status < 200 || r.status > 299 || !r.data || !r.data.session_id) throw { stop: 'http', r: r };
    if (st.aborted) throw { stop: 'aborted' };
    st.session = r.data;
    win.__polStats = { bytes: 0, batches: 0, frames: 0, slow: false };
    if (r.data.guided && r.data.guided.steps && r.data.guided.steps.length) return guided(r.data, id);
    return capture(r.data).then(function (got) {
      if (st.attempt !== id) throw { stop: 'gone' };
      stopCamera();
      st.blobs = got.blobs;
      st.offsets = got.offsets;
      upload();
    });
  }).catch(function (x) {
    if (st.attempt !== id || (x && x.stop === 'gone')) {
      if (!st.phase) stopCamera(); // given up while the camera opened (cannot-do): release it
      return;
    }
    stopRun();
    stopCamera();
    if (x && x.stop === 'http') httpFail(x.r, start);
    else if (x && x.stop === 'aborted') result('info', t('timeout_title'), [t('e_interrupted')], '', again());
    else cameraFail(x && x.stop === 'camera' ? x.err : x);
  });
}

// ---- Guided capture: for each step, batches of frames until the server says "done".
function guided(sess, id) {
  var g = sess.guided, fr = g.frame || {};
  var run = {
    id: id, sess: sess, steps: g.steps, i: -1, at: 0, buf: [], busy: false, fails: 0, most: num(g.batch_max, 8),
    W: num(fr.width, 480), H: num(fr.height, 360), q: GUIDED_QUALITY, slow: false,
    maxBytes: num(fr.max_bytes, 100000), left: num(g.max_frames, 90),
    canvas: doc.createElement('canvas'), t0: now(), tick: 0, clock: 0, spoke: '', spokeAt: 0
  };
  st.run = run;
  st.phase = 'guided';
  step(run, 0);
}

function live(run) { return st.run === run && !st.aborted; }

function stopRun() {
  var run = st.run;
  st.run = null;
  if (run) { clearTimeout(run.tick); clearTimeout(run.clock); }
}

function batchSize(run, s) { return Math.min(run.most, num(s.batch_frames, 3)); }

function step(run, i) {
  var s = run.steps[i], every = Math.max(50, num(s.interval_ms, 250));
  clearTimeout(run.tick);
  clearTimeout(run.clock);
  run.i = run.at = i;
  run.buf = [];
  stepView(s.name, t(s.name));
  dots(run.steps.length, i);
  speak(t(s.name));
  run.clock = setTimeout(function () { if (live(run)) giveUp(run, 'timeout'); }, num(s.seconds, 40) * 1000);
  run.stepEnd = now() + num(s.seconds, 40) * 1000;
  run.share = Math.floor(run.left / (run.steps.length - i)); // what a step leaves unused, the next gets
  run.used = 0;
  run.sentAt = 0;
  run.tick = setTimeout(function loop() {
    if (!live(run) || run.i !== i) return;
    grab(run, s);
    run.tick = setTimeout(loop, every);
  }, i ? STEP_LEAD_MS : 0);
}

// One frame into the rolling buffer (the latest batch_frames frames); sent when the
// buffer is full and no batch is in flight.
function grab(run, s) {
  var c = run.canvas;
  if (c.width !== run.W || c.height !== run.H) { c.width = run.W; c.height = run.H; }
  drawFrame(c.getContext('2d'), run.W, run.H);
  run.buf.push({ at: Math.round(now() - run.t0), blob: encode(c, run.maxBytes, run.q) });
  if (run.buf.length > batchSize(run, s)) run.buf.shift();
  pump(run);
}

function pump(run) {
  var s = run.steps[run.i], n = s ? batchSize(run, s) : 0;
  if (live(run) && !run.busy && s && run.buf.length >= n && paced(run, n)) send(run);
}

// The session's max_frames must last every step's time: a step may send its share (the
// frames left, split over the steps left), the first EAGER_BATCHES batches at once (most
// steps end there), the rest spread evenly over the step's remaining time.
function paced(run, n) {
  var batches = Math.floor((run.share - run.used) / n), at = now();
  if (batches < 1) return false; // this step's share is spent: its time runs out
  if (run.used < EAGER_BATCHES * n) return true;
  return at - run.sentAt >= (run.stepEnd - at) / batches;
}

function send(run) {
  var i = run.i, batch = run.buf.splice(0, run.buf.length), blobs = [];
  if (run.left <= 0) return giveUp(run, 'timeout'); // the session's frames are used up
  if (batch.length > run.left) batch = batch.slice(batch.length - run.left);
  run.busy = true;
  for (var k = 0; k < batch.length; k++) blobs.push(batch[k].blob);
  Promise.all(blobs).then(function (got) {
    var form = new FormData(), offsets = [], bytes = 0, n = 0, sent;
    if (!live(run) || run.i !== i) { run.busy = false; return pump(run); }
    form.append('nonce', run.sess.nonce);
    for (var k = 0; k < got.length; k++) if (got[k]) { offsets.push(batch[k].at); bytes += got[k].size; }
    form.append('offsets_ms', JSON.stringify(offsets));
    for (k = 0; k < got.length; k++) if (got[k]) form.append('frames', got[k], 'frame_' + pad2(n++) + '.jpg');
    if (!n) { run.busy = false; return pump(run); }
    run.left -= n;
    run.used += n;
    run.sentAt = now();
    win.__polStats.bytes += bytes;
    win.__polStats.batches += 1;
    win.__polStats.frames += n;
    sent = now();
    return request('POST', '/sessions/' + encodeURIComponent(run.sess.session_id) + '/steps/' + i + '/frames',
                   form, null, 60000).then(function (r) {
      run.busy = false;
      if (!live(run)) return;
      if (now() - sent > SLOW_MS && !run.slow) {
        // A slow uplink: smaller, lighter frames for the rest of this attempt.
        run.slow = win.__polStats.slow = true;
        run.W = SLOW.width;
        run.H = SLOW.height;
        run.q = SLOW.quality;
        run.buf = [];
      }
      answer(run, i, r);
    });
  });
}

function answer(run, i, r) {
  var d = r.data || {}, code = (d.error && d.error.code) || '';
  if (r.status === 200 && d.state) {
    run.fails = 0;
    if (d.state === 'finished') return finish(run, d.verdict || {});
    if (run.i !== i) return pump(run);
    if (d.state === 'done') return good(run, typeof d.next_step === 'number' ? d.next_step : i + 1);
    feedback(run, d);
    return pump(run);
  }
  if (code === 'step_mismatch') return pump(run); // a late batch: carry on with this step
  if (code === 'too_many_frames') return giveUp(run, 'timeout');
  if ((!r.status || r.status >= 500) && ++run.fails < 3) return pump(run); // try the next batch
  stopRun();
  stopCamera();
  httpFail(r, start);
}

// The server's view of this step: the hint in words (and spoken), the oval, the bar.
function feedback(run, d) {
  var h = d.hint && has(S, 'h_' + d.hint) ? String(d.hint) : '';
  var p = Math.max(0, Math.min(1, Number(d.progress) || 0)), at = now();
  $('step-bar').value = Math.round(p * 100);
  oval(!h || (PROGRESSING[h] && p > 0) ? 'ok' : (PROGRESSING[h] ? '' : 'warn'));
  hint(h ? t('h_' + h) : '', '');
  if (h && (h !== run.spoke || at - run.spokeAt > HINT_SPEAK_MS)) {
    run.spoke = h;
    run.spokeAt = at;
    speak(t('h_' + h), true);
  }
}

function good(run, next) {
  clearTimeout(run.tick);
  clearTimeout(run.clock);
  run.i = -1; // frames and answers of the old step are dropped
  run.buf = [];
  $('step-bar').value = 100;
  oval('ok');
  hint(t('good'), 'good');
  speak(t('good'));
  buzz(200);
  run.tick = setTimeout(function () {
    if (!live(run)) return;
    if (next < run.steps.length) step(run, next);
    else giveUp(run, 'timeout'); // "done" on the last step without a verdict: start again
  }, GOOD_MS);
}

function finish(run, verdict) {
  stopRun();
  stopCamera();
  buzz(200);
  outcome(verdict);
}

// Time is up (or the frames are): tell the server, then a plain retry, never "failed".
function giveUp(run, why) {
  var at = run.at; // the step on screen (or just confirmed, during "good")
  stopRun();
  stopCamera();
  if (why !== 'timeout') return abandon(run, at, why);
  text($('busy-text'), t('one_moment'));
  hide($('busy-bar'), true);
  show('busy');
  abandon(run, at, why).then(function (r) {
    var d = (r && r.data) || {};
    if (st.attempt !== run.id) return;
    if (d.attempts_left === 0) return caseworker('no_attempts_title', d.month);
    result('info', t('timeout_title'), [t('timeout_text')], '', { label: t('try_again'), run: start });
  });
}

function abandon(run, at, why) {
  return request('POST', '/sessions/' + encodeURIComponent(run.sess.session_id) + '/abandon',
                 JSON.stringify({ nonce: run.sess.nonce, step: at, why: why }));
}

// ---- The step screen, speech, the person who cannot do a movement.
function stepView(code, s) {
  instruct(code, s);
  hint('', '');
  oval('');
  $('step-bar').value = 0;
}

function hint(s, kind) {
  var el = $('hint');
  el.className = 'hint' + (kind ? ' ' + kind : '');
  text(el, s);
}

function oval(state) { $('oval').className = 'oval' + (state ? ' ' + state : ''); }

function buzz(ms) { if (nav.vibrate) { try { nav.vibrate(ms); } catch (e) { /* fine */ } } }

function pageLang() { return doc.documentElement.getAttribute('lang') || 'zh-CN'; }

// A voice for the page's language, or null (then the text alone).
function voice(ss) {
  var want = pageLang().toLowerCase(), base = want.split('-')[0], vs = ss.getVoices() || [], near = null;
  for (var i = 0; i < vs.length; i++) {
    var l = String(vs[i].lang || '').replace('_', '-').toLowerCase();
    if (l === want) return vs[i];
    if (!near && l.split('-')[0] === base) near = vs[i];
  }
  return near;
}

// Says s in the page's language. polite: not over something still being said (hints);
// otherwise what is being said stops (a new step, "good", an outcome).
function speak(s, polite) {
  var ss = win.speechSynthesis, U = win.SpeechSynthesisUtterance, u, v;
  if (!sound || !ss || !U || !s) return;
  try {
    if (polite && (ss.speaking || ss.pending)) return;
    v = voice(ss);
    if (!v && (ss.getVoices() || []).length) return; // voices known, none speaks this language
    u = new U(s);
    u.lang = pageLang();
    if (v) u.voice = v;
    u.rate = 0.9;
    ss.cancel();
    ss.speak(u);
  } catch (e) { /* text only */ }
}

function soundButton() {
  var b = $('btn-sound');
  text(b, t(sound ? 'sound_on' : 'sound_off'));
  b.setAttribute('aria-pressed', sound ? 'true' : 'false');
  hide(b, !(win.speechSynthesis && win.SpeechSynthesisUtterance));
}

function toggleSound() {
  sound = !sound;
  try { win.localStorage.setItem(SOUND_KEY, sound ? 'on' : 'off'); } catch (e) { /* this page only */ }
  if (!sound && win.speechSynthesis) { try { win.speechSynthesis.cancel(); } catch (e) { /* fine */ } }
  soundButton();
}

// "I cannot do this movement": any attempt under way stops (the session is given up as
// "left_page"), then the choice of why, then the request for a caseworker's visit.
function cannot() {
  var run = st.run;
  st.attempt++;
  st.aborted = true;
  if (run) { stopRun(); abandon(run, run.at, 'left_page'); }
  stopCamera();
  st.busy = false;
  st.phase = '';
  show('cannot');
  speak(t('cannot_title'));
}

function assistance(need) {
  st.busy = true;
  text($('busy-text'), t('one_moment'));
  hide($('busy-bar'), true);
  show('busy');
  request('POST', '/assistance', JSON.stringify({ link_token: TOKEN, need: need })).then(function (r) {
    var d = r.data || {};
    if (r.status === 200 && d.status) {
      result('info', t('assist_title'), [t('assist_text')], month(d.month));
      return speak(t('assist_title'));
    }
    httpFail(r, function () { assistance(need); });
  });
}

function upload() {
  var sess = st.session, bar = $('busy-bar'), form = new FormData();
  st.busy = true;
  st.phase = 'upload';
  text($('busy-text'), t('sending'));
  bar.value = 0;
  hide(bar, false);
  show('busy');
  form.append('nonce', sess.nonce);
  form.append('offsets_ms', JSON.stringify(st.offsets));
  for (var i = 0; i < st.blobs.length; i++) form.append('frames', st.blobs[i], 'frame_' + pad2(i) + '.jpg');
  request('POST', '/sessions/' + encodeURIComponent(sess.session_id) + '/frames', form, function (part) {
    bar.value = Math.round(part * 100);
    if (part >= 1) { text($('busy-text'), t('checking')); hide(bar, true); }
  }).then(function (r) {
    var d = r.data;
    if (r.status && r.status < 500) { st.blobs = null; st.offsets = null; }
    if (r.status === 200 && d && d.outcome) outcome(d); else httpFail(r, start, upload);
  });
}

function outcome(d) {
  var reasons = d.reasons || [], lines = [], seen = {}, left = d.attempts_left;
  var noTemplate = false;
  if (d.outcome === 'passed') return passed(false, d.month);
  if (d.outcome === 'review') return caseworker('review_title', d.month);
  for (var i = 0; i < reasons.length; i++) {
    var code = String(reasons[i]);
    if (code === 'undecodable_frame') code = 'bad_frame';
    var key = has(NOT_LIVE, code) ? 'r_not_live' : (has(S, 'r_' + code) ? 'r_' + code : 'r_other');
    if (code === 'no_template') noTemplate = true;
    if (!has(seen, key)) lines.push(t(key));
    seen[key] = 1;
  }
  if (!lines.length) lines.push(t('r_other'));
  if (typeof left === 'number' && left > 0 && !noTemplate) {
    lines.push(t('attempts_left', { n: left }));
    return result('fail', t('failed_title'), lines, month(d.month), again());
  }
  lines.push(t('caseworker'));
  result('fail', t(noTemplate ? 'failed_title' : 'no_attempts_title'), lines, month(d.month));
}

// Leaving the page mid-attempt releases the camera; the attempt starts over.
// A guided attempt is given up as "left_page" and a new one offered.
doc.addEventListener('visibilitychange', function () {
  var run = st.run;
  if (doc.hidden && run && live(run)) {
    giveUp(run, 'left_page');
    result('info', t('timeout_title'), [t('e_interrupted')], '', again());
  } else if (doc.hidden && (st.phase === 'session' || st.phase === 'capture')) {
    st.aborted = true;
    stopCamera();
  }
});
win.addEventListener('pagehide', stopCamera);
$('btn-start').addEventListener('click', start);
$('btn-sound').addEventListener('click', toggleSound);
$('btn-cannot-intro').addEventListener('click', cannot);
$('btn-cannot').addEventListener('click', cannot);
$('btn-back').addEventListener('click', function () { boot(); });
(function () {
  var needs = root.querySelectorAll('[data-need]');
  for (var i = 0; i < needs.length; i++) {
    needs[i].addEventListener('click', function () { assistance(this.getAttribute('data-need')); });
  }
})();
soundButton();
$('btn-action').addEventListener('click', function () {
  var act = st.action;
  st.action = null;
  this.disabled = true;
  if (act) act.run();
});
if (win.Promise && win.XMLHttpRequest) boot();
else result('fail', t('error_title'), [t('c_unsupported')]);
})();
