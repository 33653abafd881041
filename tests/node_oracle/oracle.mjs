// Test-only interoperability oracle: the age authors' TypeScript implementation
// (npm "age-encryption"), driven from the Python tests. Reads stdin, writes stdout.
//
//   node oracle.mjs keygen [--classic]     -> identity line, then recipient line
//   node oracle.mjs recipient IDENTITY     -> the identity's recipient
//   node oracle.mjs encrypt RECIPIENT...   -> stdin encrypted to the recipients
//   node oracle.mjs decrypt IDENTITY...    -> stdin decrypted with the identities
//
// Any failure: one line on stderr and exit status 1.
import { readFileSync } from "node:fs";
import {
  Decrypter,
  Encrypter,
  generateHybridIdentity,
  generateX25519Identity,
  identityToRecipient,
} from "age-encryption";

function out(data) {
  process.stdout.write(typeof data === "string" ? data : Buffer.from(data));
}

async function main(argv) {
  const [command, ...args] = argv;
  if (command === "keygen") {
    const identity = args.includes("--classic")
      ? await generateX25519Identity()
      : await generateHybridIdentity();
    out(`${identity}\n${await identityToRecipient(identity)}\n`);
  } else if (command === "recipient") {
    out(`${await identityToRecipient(args[0])}\n`);
  } else if (command === "encrypt") {
    const encrypter = new Encrypter();
    for (const recipient of args) encrypter.addRecipient(recipient);
    out(await encrypter.encrypt(new Uint8Array(readFileSync(0))));
  } else if (command === "decrypt") {
    const decrypter = new Decrypter();
    for (const identity of args) decrypter.addIdentity(identity);
    out(await decrypter.decrypt(new Uint8Array(readFileSync(0))));
  } else {
    throw new Error(`unknown command ${command}`);
  }
}

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`age-encryption: ${error.message ?? error}\n`);
  process.exit(1);
});
