import { render } from 'preact';
import { App } from './app';
import { restoreLogin } from './state/auth';
import './state/theme';
import './styles/base.css';
import './styles/layout.css';
import './styles/agents.css';
import './styles/panels.css';
import './styles/tables.css';

const root = document.getElementById('app');
if (root) {
  render(<App />, root);
  void restoreLogin();
}
