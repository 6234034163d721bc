// Uploads a file to an upload link (a shared-access signature for one new block blob) with Put Block
// and Put Block List, a few blocks at a time: any size works, memory stays at a few blocks, and the
// progress is known per block.
import { ApiError } from "./api.js";

const BLOCK_BYTES = 8 * 1024 * 1024;
const PARALLEL = 4;

function blockID(i) {
  // Every id of a blob must have the same length; base64 of a fixed-width number.
  return btoa(`block-${String(i).padStart(8, "0")}`);
}

function withQuery(url, params) {
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.href;
}

async function put(url, body, headers) {
  let resp;
  try {
    resp = await fetch(url, { method: "PUT", body, headers });
  } catch {
    throw new ApiError(0, "The upload failed", "The storage service cannot be reached from this browser. Check your connection and try again.");
  }
  if (resp.status === 403) {
    throw new ApiError(403, "The upload failed", "The storage service refused the upload link; it may have expired. Start the upload again.");
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, "The upload failed", `The storage service answered with status ${resp.status}. Try again.`);
  }
}

// uploadFile sends file to uploadURL, calling onProgress(bytesDone) as blocks arrive.
export async function uploadFile(file, uploadURL, onProgress) {
  if (file.size === 0) {
    // Put Block refuses an empty block: an empty file is one empty Put Blob (the check then refuses it).
    await put(uploadURL, file, { "x-ms-blob-type": "BlockBlob" });
    onProgress(0);
    return;
  }
  const count = Math.ceil(file.size / BLOCK_BYTES);
  const ids = Array.from({ length: count }, (_, i) => blockID(i));
  let next = 0;
  let done = 0;
  onProgress(0);
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const chunk = file.slice(i * BLOCK_BYTES, Math.min(file.size, (i + 1) * BLOCK_BYTES));
      await put(withQuery(uploadURL, { comp: "block", blockid: ids[i] }), chunk, {});
      done += chunk.size;
      onProgress(done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, count) }, worker));
  const list = `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`;
  await put(withQuery(uploadURL, { comp: "blocklist" }), list, { "Content-Type": "application/xml", "x-ms-blob-content-type": "application/gzip" });
}
