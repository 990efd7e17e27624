// The recording player: the waveform from the recording's peaks drawn on a canvas (caller,
// the left channel, above the line; callee, the right channel, below), play/pause, and seek
// by clicking or pressing arrow keys on the waveform. Seeking sets the <audio> element's
// currentTime: the browser then asks the server for that part with an HTTP Range request.
const CALLER = "#0b5cad";
const CALLEE = "#e07b00";
const PLAYED = "rgba(27, 31, 36, 0.12)";

function drawWave(canvas, peaks, played) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const half = height / 2;
  peaks.channels.slice(0, 2).forEach((channel, c) => {
    const count = channel.max.length;
    g.fillStyle = c === 0 ? CALLER : CALLEE;
    for (let x = 0; x < width; x++) {
      const i = Math.min(count - 1, Math.floor((x / width) * count));
      const amplitude = Math.max(Math.abs(channel.min[i]), Math.abs(channel.max[i]));
      const bar = Math.max(1, amplitude * (half - 2));
      // Caller grows up from the middle line, callee down from it.
      g.fillRect(x, c === 0 ? half - bar : half, 1, bar);
    }
  });
  g.fillStyle = PLAYED;
  g.fillRect(0, 0, width * played, height);
}

async function setUp(player) {
  const audio = player.querySelector("audio");
  const canvas = player.querySelector("canvas");
  const button = player.querySelector("button.play");
  const status = player.querySelector(".position");
  const response = await fetch(player.dataset.peaks, { credentials: "same-origin" });
  if (!response.ok) {
    status.textContent = "The waveform could not be loaded.";
    return;
  }
  const peaks = await response.json();
  const duration = () => (isFinite(audio.duration) && audio.duration > 0 ?
    audio.duration : Number(player.dataset.duration));
  const redraw = () => drawWave(canvas, peaks, Math.min(1, audio.currentTime / duration()));
  const seek = (fraction) => {
    audio.currentTime = Math.max(0, Math.min(1, fraction)) * duration();
    // Nothing is fetched before the first play or seek (preload="none"); then the browser
    // reads the header and asks for the part at the new position, not the whole file.
    if (audio.readyState === HTMLMediaElement.HAVE_NOTHING) audio.preload = "metadata";
    redraw();
  };
  const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
  const tell = () => {
    status.textContent = `${clock(audio.currentTime)} of ${clock(duration())}`;
    canvas.setAttribute("aria-valuenow", String(Math.round(audio.currentTime)));
    canvas.setAttribute("aria-valuetext", status.textContent);
  };
  canvas.setAttribute("aria-valuemax", String(Math.round(duration())));
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    seek((event.clientX - box.left) / box.width);
  });
  canvas.addEventListener("keydown", (event) => {
    const step = { ArrowLeft: -5, ArrowRight: 5, Home: -Infinity, End: Infinity }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    seek((audio.currentTime + step) / duration());
  });
  button.addEventListener("click", () => (audio.paused ? audio.play() : audio.pause()));
  audio.addEventListener("play", () => { button.textContent = "Pause"; });
  audio.addEventListener("pause", () => { button.textContent = "Play"; });
  audio.addEventListener("timeupdate", () => { redraw(); tell(); });
  audio.addEventListener("loadedmetadata", () => { redraw(); tell(); });
  new ResizeObserver(redraw).observe(canvas);
  redraw();
  tell();
  player.dataset.ready = "true";
}

document.querySelectorAll(".player[data-peaks]").forEach(setUp);
