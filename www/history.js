// @ts-check
// Every result the page made, kept in this browser's IndexedDB: its image (PNG, with its
// settings inside), a thumbnail, what made it (the settings, which hold a LINA run's plan and
// scene graph) and the checker's verdicts.
// One object store, keyed by an increasing number; entries are written whole in one
// transaction, so a failed write (a full quota) leaves every earlier entry as it was.

const DATABASE = "lina-history";
const STORE = "results";

/**
 * @typedef {{ id?: number, time: number, png: Blob, thumbnail: Blob, settings: Record<string, any>,
 *   verdicts?: any[] | null }} Entry
 */

/** @param {IDBRequest | IDBTransaction} request */
function done(request) {
  return new Promise((resolve, reject) => {
    if (request instanceof IDBTransaction) {
      request.oncomplete = () => resolve(undefined);
      request.onabort = request.onerror = () => reject(request.error ?? new Error("the transaction was aborted"));
    } else {
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    }
  });
}

/** A quota error, said plainly: nothing earlier was lost. @param {any} error */
function explained(error) {
  if (error?.name === "QuotaExceededError") {
    return Object.assign(new Error("The browser's storage for this page is full: this result was not kept (earlier ones are). Clear some history to keep new ones."), { code: "quota" });
  }
  return error instanceof Error ? error : new Error(String(error));
}

export class History {
  /** @param {IDBDatabase} db */
  constructor(db) {
    this.db = db;
  }

  /** Opens (creating on first use) the page's history. */
  static async open() {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
    return new History(/** @type {IDBDatabase} */ (await done(request)));
  }

  /** Stores `entry`; resolves to its id. A full quota rejects with code "quota". @param {Entry} entry */
  async add(entry) {
    try {
      const transaction = this.db.transaction(STORE, "readwrite");
      const key = done(transaction.objectStore(STORE).add(entry));
      await done(transaction);
      return /** @type {number} */ (await key);
    } catch (error) {
      throw explained(error);
    }
  }

  /** Every entry, newest first. @returns {Promise<Entry[]>} */
  async list() {
    const transaction = this.db.transaction(STORE, "readonly");
    const all = /** @type {Entry[]} */ (await done(transaction.objectStore(STORE).getAll()));
    return all.reverse();
  }

  /** @param {number} id */
  async remove(id) {
    const transaction = this.db.transaction(STORE, "readwrite");
    transaction.objectStore(STORE).delete(id);
    await done(transaction);
  }

  async clear() {
    const transaction = this.db.transaction(STORE, "readwrite");
    transaction.objectStore(STORE).clear();
    await done(transaction);
  }
}

/** A small PNG of `canvas` (its longer side `side` pixels). @param {HTMLCanvasElement} canvas */
export async function thumbnailOf(canvas, side = 96) {
  const scale = side / Math.max(canvas.width, canvas.height);
  const small = document.createElement("canvas");
  small.width = Math.max(1, Math.round(canvas.width * Math.min(1, scale)));
  small.height = Math.max(1, Math.round(canvas.height * Math.min(1, scale)));
  const context = /** @type {CanvasRenderingContext2D} */ (small.getContext("2d"));
  context.imageSmoothingEnabled = scale < 1;
  context.drawImage(canvas, 0, 0, small.width, small.height);
  return /** @type {Promise<Blob>} */ (new Promise((resolve) => small.toBlob((blob) => resolve(/** @type {Blob} */ (blob)), "image/png")));
}
