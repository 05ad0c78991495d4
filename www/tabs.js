// @ts-check
// The panels beside the image as ARIA tabs: one tab selected and its panel shown; the arrow
// keys, Home and End move between tabs (the selected tab is the one Tab stop of the list).

export class Tabs {
  /** @param {HTMLElement} list the element with role="tablist" */
  constructor(list) {
    /** @type {HTMLButtonElement[]} */
    this.tabs = [...list.querySelectorAll('[role="tab"]')].map((tab) => /** @type {HTMLButtonElement} */ (tab));
    for (const tab of this.tabs) tab.addEventListener("click", () => this.select(tab.id));
    list.addEventListener("keydown", (event) => {
      const at = this.tabs.findIndex((tab) => tab === document.activeElement);
      if (at < 0) return;
      const n = this.tabs.length;
      /** @type {Record<string, number>} */
      const moves = { ArrowRight: (at + 1) % n, ArrowLeft: (at + n - 1) % n, Home: 0, End: n - 1 };
      const next = moves[event.key];
      if (next === undefined) return;
      event.preventDefault();
      this.select(this.tabs[next].id);
      this.tabs[next].focus();
    });
  }

  /** Shows the panel of the tab with id `id` ("tab-lina"). @param {string} id */
  select(id) {
    for (const tab of this.tabs) {
      const chosen = tab.id === id;
      tab.setAttribute("aria-selected", String(chosen));
      tab.tabIndex = chosen ? 0 : -1;
      const panel = document.getElementById(/** @type {string} */ (tab.getAttribute("aria-controls")));
      if (panel) panel.hidden = !chosen;
    }
  }
}
