// Light or dark: the system's choice by default; the header's button cycles system → light →
// dark, remembered in this browser. The CSS picks colours with light-dark() from the root's
// color-scheme, which data-theme overrides.

import { effect, signal } from '@preact/signals';

export type Theme = 'system' | 'light' | 'dark';

const STORAGE_KEY = 'postern.theme';
const ORDER: Theme[] = ['system', 'light', 'dark'];

function stored(): Theme {
  const value = localStorage.getItem(STORAGE_KEY);
  return value === 'light' || value === 'dark' ? value : 'system';
}

export const theme = signal<Theme>(stored());

effect(() => {
  const value = theme.value;
  if (value === 'system') {
    localStorage.removeItem(STORAGE_KEY);
    delete document.documentElement.dataset.theme;
  } else {
    localStorage.setItem(STORAGE_KEY, value);
    document.documentElement.dataset.theme = value;
  }
});

export function nextTheme(): void {
  theme.value = ORDER[(ORDER.indexOf(theme.value) + 1) % ORDER.length];
}
