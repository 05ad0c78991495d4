// @ts-check
// Small builders of controls the page's modules share.

/**
 * A button showing `text`, named `label` for assistive technology (the name should start
 * with the text shown, as axe-core's label-content-name-mismatch rule asks).
 * @param {string} text @param {string} label @param {(event: MouseEvent) => void} onClick
 */
export function button(text, label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.setAttribute("aria-label", label);
  element.addEventListener("click", onClick);
  return element;
}
