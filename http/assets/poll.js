// The Poller: calls a function again and again while its view is shown.

import { showError } from './banner.js';

// Runs fn, then waits interval ms, then again: a slow answer delays the
// next poll instead of stacking requests up behind it.
export class Poller {
  constructor(fn, interval) {
    this.fn = fn;
    this.interval = interval;
    this.running = false;
    this.gen = 0;
    this.timer = null;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.tick(++this.gen);
  }

  stop() {
    this.running = false;
    this.gen++;
    clearTimeout(this.timer);
  }

  restart() { this.stop(); this.start(); }

  async tick(gen) {
    try { await this.fn(); } catch (e) { showError(e); }
    if (this.running && gen === this.gen) {
      this.timer = setTimeout(() => this.tick(gen), this.interval);
    }
  }
}
