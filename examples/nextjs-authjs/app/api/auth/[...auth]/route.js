// Next.js (App Router): every /api/auth/* request goes to Auth.js with the secureFlows provider.
import { handleAuth } from "../../../../auth.js";

export const GET = (request) => handleAuth(request);
export const POST = (request) => handleAuth(request);
