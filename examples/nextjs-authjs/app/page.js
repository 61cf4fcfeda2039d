// The home page reads the Auth.js session through its own endpoint and offers sign-in or sign-out.
import { headers } from "next/headers";

import { handleAuth } from "../auth.js";

async function session() {
  const incoming = await headers();
  const host = incoming.get("host");
  const response = await handleAuth(
    new Request(`http://${host}/api/auth/session`, { headers: { cookie: incoming.get("cookie") ?? "" } }),
  );
  return response.ok ? response.json() : null;
}

export default async function Home() {
  const current = await session();
  const user = current?.user;
  return (
    <main>
      <h1>secureFlows with Auth.js</h1>
      {user ? (
        <>
          <p>Signed in as {user.email ?? user.id}.</p>
          <p><a href="/api/auth/signout">Sign out</a></p>
        </>
      ) : (
        <p><a href="/api/auth/signin">Sign in with secureFlows</a></p>
      )}
    </main>
  );
}
